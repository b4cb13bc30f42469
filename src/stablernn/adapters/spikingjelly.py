"""SpikingJelly neurons: recognised, and refused with the reason (no adapter yet).

SpikingJelly's ``LIFNode`` keeps its time constant ``tau`` as a Python float (not a tensor, so neither LSC's
rescaling in place nor its best-weights snapshot can reach it) and its membrane ``v`` on the module; the step is
``v = v + (x - (v - v_reset)) / tau`` then a hard reset, which the generic step protocol expresses in a few lines
(docs/your-model.md shows the pattern on a diagonal recurrence).
"""
from __future__ import annotations

from .base import refuse_layer

for _name in ("LIFNode", "ParametricLIFNode", "IFNode", "LIAFNode", "KLIFNode", "QIFNode", "EIFNode"):
    refuse_layer(f"spikingjelly.{_name}", f"SpikingJelly {_name} is not supported by the adapter yet; write its "
                 "step with the generic step protocol, adapt(model, StepSpec(...)) (docs/your-model.md)")
