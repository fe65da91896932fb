"""History that outlives the incident: samples of every sampler cycle (pool, locks,
activity) with retention and downsampling, incidents, and the fleet's pool snapshots, all
in the dashboard's own schema (`dashboard/state/model.py`, state_0005)."""
