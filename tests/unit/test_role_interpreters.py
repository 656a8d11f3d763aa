"""Every task that calls a module importing ZODB, ZEO or Zope runs it with the host's
application Python (zopeops_app_python), so a host's default interpreter need not have them."""
from __future__ import annotations

import pathlib

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def zodb_modules():
    """The modules that import ZODB through module_utils/zodb.py's import_zodb."""
    return sorted(path.stem for path in (REPO / 'plugins' / 'modules').glob('*.py')
                  if 'import_zodb(' in path.read_text())


def tasks(items):
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ('block', 'rescue', 'always'):
            yield from tasks(task.get(key))


def test_the_zodb_modules_are_known():
    assert {'zodb_snapshot', 'zodb_restore', 'zodb_pack', 'zodb_replay', 'zodb_convert',
            'lb_cutover',
            'zope_object_export', 'zope_object_import'} <= set(zodb_modules())


def test_every_zodb_task_runs_with_the_app_python():
    names = ['zopeops.stages.' + name for name in zodb_modules()]
    found, wrong = [], []
    for path in sorted(list((REPO / 'roles').glob('*/tasks/*.yml'))
                       + list((REPO / 'playbooks').glob('*.yml'))):
        for task in tasks(yaml.safe_load(path.read_text())):
            module = next((name for name in names if name in task), None)
            if module is None:
                continue
            where = '%s: %s' % (path.relative_to(REPO), task.get('name'))
            found.append(where)
            interpreter = (task.get('vars') or {}).get('ansible_python_interpreter', '')
            if 'zopeops_app_python' not in str(interpreter):
                wrong.append(where)
    # snapshot_here.yml serves both data steps; the replaced count comes from zodb_restore
    assert len(found) >= 12, found
    assert not wrong, ('these tasks run a ZODB module without ansible_python_interpreter from '
                       'zopeops_app_python: %s' % wrong)
