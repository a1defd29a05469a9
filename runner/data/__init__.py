"""Dataset library: each ``conf/dataset/<name>.yaml`` instantiates a loader from ``runner/data/<name>.py``."""
