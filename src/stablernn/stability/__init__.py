"""Old module paths, kept as aliases for one release: LSC moved to stablernn.lsc, the spiking conditions to
stablernn.snn, the dynamics to stablernn.dynamics, the diagnostics to stablernn.diagnostics."""
