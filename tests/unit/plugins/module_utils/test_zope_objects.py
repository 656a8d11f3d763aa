"""zope_objects: paths, the item-by-item report, and fingerprints of plain persistent objects
(the project's venv has ZODB and Zope; OFS folders are used as a site would hold them)."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import zope_objects as zo


@pytest.mark.parametrize('path', ['partners/acme', '/', '', '/partners/../x', '/a/_private'])
def test_refuses_paths_that_name_no_object(path):
    with pytest.raises(zo.ZopeObjectError):
        zo.split_path(path)


def test_splits_an_absolute_path():
    assert zo.split_path('/partners/acme/') == ['partners', 'acme']


def entry(digest, size=10, cls='OFS.Image.Image'):
    return {'class': cls, 'bytes': size, 'sha256': digest}


def test_compare_names_each_item_once_with_its_sizes():
    before = {'': entry('r'), 'a': entry('a1', 5), 'gone': entry('g', 7)}
    after = {'': entry('r'), 'a': entry('a2', 9), 'new': entry('n', 3)}
    report = zo.compare(before, after)
    assert report['counts'] == {'added': 1, 'replaced': 1, 'removed': 1, 'unchanged': 1}
    assert report['replaced'] == [{'path': 'a', 'class': 'OFS.Image.Image', 'bytes': 9,
                                   'bytes_before': 5}]
    assert report['removed'] == [{'path': 'gone', 'class': 'OFS.Image.Image', 'bytes_before': 7}]
    assert (report['bytes_before'], report['bytes_after']) == (22, 22)


def folder_with_image(title='Acme', data=b'png', etag='ts1'):
    OFS = pytest.importorskip('OFS.Folder')
    from OFS.Image import Image
    folder = OFS.Folder('acme')
    folder.title = title
    image = Image('logo.png', 'logo', data)
    image.__dict__['_EtagSupport__etag'] = etag
    folder._setObject('logo.png', image)
    return folder


def test_equal_content_has_equal_fingerprints_whatever_the_etag():
    assert zo.manifest(folder_with_image(etag='ts1')) == zo.manifest(folder_with_image(etag='ts2'))


def test_a_changed_child_changes_only_its_own_fingerprint():
    before, after = zo.manifest(folder_with_image()), zo.manifest(folder_with_image(data=b'gif'))
    assert before[''] == after['']
    assert before['logo.png']['sha256'] != after['logo.png']['sha256']


def test_kept_properties_make_a_title_change_no_change():
    target, incoming = folder_with_image(title='Beta Acme'), folder_with_image(title='Dev Acme')
    overlay = zo.kept_overlay(target, incoming)
    assert overlay['title'] == 'Beta Acme'
    assert zo.manifest(incoming, overlay) == zo.manifest(target)
    assert zo.manifest(incoming) != zo.manifest(target)
