"""The banner viewlet: one line of text, the revision's BANNER, on every page of the site."""
from html import escape

from plone.app.layout.viewlets.common import ViewletBase

from zopeops_plonedemo.banner import BANNER


class BannerViewlet(ViewletBase):

    def render(self):
        return '<div id="zopeops-banner" class="container">%s</div>' % escape(BANNER)
