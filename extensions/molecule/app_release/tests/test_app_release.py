"""app_release: the release of the head's revision is built once and the instance runs it."""
from __future__ import annotations

import json


def test_current_points_at_the_release_of_main(host, sandbox):
    sha = sandbox.main_revision()
    current = host.file(str(sandbox.instance_dir / 'current'))
    assert current.is_symlink
    assert current.linked_to == str(sandbox.root / 'releases' / sha)
    assert host.file(str(sandbox.root / 'releases' / sha / 'REVISION')).content_string.strip() == sha


def test_the_release_has_its_own_virtualenv_with_zope(host, sandbox):
    python = sandbox.instance_dir / 'current' / 'venv' / 'bin' / 'python'
    assert host.file(str(python)).exists
    result = host.run('%s -c "import Zope2, ZEO, ZODB"', str(python))
    assert result.rc == 0, result.stderr


def test_deployed_json_records_the_release(host, sandbox):
    deployed = host.file(str(sandbox.instance_dir / 'deployed.json'))
    assert deployed.is_file
    assert deployed.mode == 0o644
    record = json.loads(deployed.content_string)
    assert record['revision'] == sandbox.main_revision()
    assert record['requested'] == 'main'


def test_folders_are_readable_not_writable_by_others(host, sandbox):
    for path in (sandbox.root / 'releases', sandbox.instance_dir):
        folder = host.file(str(path))
        assert folder.is_directory
        assert folder.mode == 0o755, path
