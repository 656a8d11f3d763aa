# The one line that differs between the demo revisions (build_demo_repo.py rewrites it for v1).
BANNER = 'ZopeOps Plone demo v2: the banner viewlet'
