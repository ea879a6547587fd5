"""Generation replicas on Ray: several devices, several machines (docs/SCALING.md).

Nothing here is imported unless Easel starts with `--workers N` or `--ray-address ADDR`; Ray itself is imported
only by `webui.cluster.dispatcher.start_cluster`, so an Easel without those flags never loads it (tested).
`replica.py` is what runs in each replica process (its own Easel: settings → model manager → engine);
`dispatcher.py` is the API process's side: a `Worker` with the same interface the UI and the API call, which
routes generation jobs to replicas and writes their PNGs.
"""
