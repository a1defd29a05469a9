"""Model library: each ``conf/model/<name>.yaml`` instantiates a spec from ``runner/models/<name>.py``."""
