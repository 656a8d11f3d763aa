"""A tiny Plone add-on: a viewlet above the footer of every page that says which revision of the
example's code the site runs (the text differs between the tags demo-v1 and demo-v2)."""
