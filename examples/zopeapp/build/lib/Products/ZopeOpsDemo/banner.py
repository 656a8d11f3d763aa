# The one line that differs between the demo revisions (build_demo_repo.py rewrites it for v1).
BANNER = 'ZopeOps demo v2: partner brandings with a shared marker'
