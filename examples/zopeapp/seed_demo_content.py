"""Seed the demo content into a Zope site, once.

Run inside a Zope client's configuration (``app`` is bound by zconsole):

    <instance_dir>/current/venv/bin/zconsole run <instance_dir>/etc/zope-client1.conf \
        seed_demo_content.py

Creates, only if missing, the folder ``partners`` with three partner brandings (a Folder each,
holding a Page Template ``index_html`` and an Image ``logo.png``) and the File ``marker``
whose text tests change to follow data through the pipeline. Prints ``created`` or ``exists``.
"""
import struct
import zlib

import transaction
from OFS.Folder import manage_addFolder
from OFS.Image import manage_addFile
from OFS.Image import manage_addImage
from Products.PageTemplates.ZopePageTemplate import manage_addPageTemplate

PARTNERS = (
    # id, title, colour of the logo (RGB)
    ('acme', 'ACME Widgets', (200, 30, 30)),
    ('globex', 'Globex Corporation', (30, 150, 60)),
    ('initech', 'Initech', (40, 70, 200)),
)
MARKER_TEXT = 'seeded'

BRANDING_TEMPLATE = """<html>
  <head><title tal:content="container/title">Partner</title></head>
  <body>
    <img tal:attributes="src string:${container/absolute_url}/logo.png" alt="logo" />
    <h1 tal:content="container/title">Partner</h1>
    <p>Brought to you by the ZopeOps demo.</p>
  </body>
</html>
"""


def png_pixel(rgb):
    """A valid 1x1 PNG of one colour: enough for an Image object with real image data."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))
    header = struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b'\x00' + bytes(rgb))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', pixels)
            + chunk(b'IEND', b''))


def seed(root):
    """Add what is missing; return True if anything was created."""
    created = False
    if 'partners' not in root.objectIds():
        manage_addFolder(root, 'partners', title='Partner brandings')
        created = True
    partners = root['partners']
    for partner_id, title, rgb in PARTNERS:
        if partner_id not in partners.objectIds():
            manage_addFolder(partners, partner_id, title=title)
            created = True
        branding = partners[partner_id]
        if 'index_html' not in branding.objectIds():
            manage_addPageTemplate(branding, 'index_html', title=title,
                                   text=BRANDING_TEMPLATE)
            created = True
        if 'logo.png' not in branding.objectIds():
            manage_addImage(branding, 'logo.png', png_pixel(rgb), title=title + ' logo',
                            content_type='image/png')
            created = True
    if 'marker' not in root.objectIds():
        manage_addFile(root, 'marker', MARKER_TEXT.encode('utf-8'), content_type='text/plain',
                       title='Follows the data through the pipeline')
        created = True
    return created


if __name__ == '__main__':
    app = globals()['app']  # bound by ``zconsole run``
    if seed(app):
        transaction.commit()
        print('created')
    else:
        transaction.abort()
        print('exists')
