"""Generation replicas on Ray Serve: several devices, several machines (docs/SCALING.md).

Nothing here is imported unless Easel starts with `--workers N` or `--ray-address ADDR`; Ray itself is imported
only by `webui.cluster.deployment.start_cluster`, so an Easel without those flags never loads it (tested).
`replica.py` is the Serve deployment's body, what runs in each replica process (its own Easel: settings → model
manager → engine); `deployment.py` starts Ray, Serve and the deployment; `serve_router.py` is the deployment's
request router (each call goes to the replica Easel chose); `lanes.py` is Easel's routing; `dispatcher.py` is
the API process's side: a `Worker` with the same interface the UI and the API call, which sends jobs to replicas
and writes their PNGs.
"""
