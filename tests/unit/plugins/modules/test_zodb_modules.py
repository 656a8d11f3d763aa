"""The zodb_* modules' docs parse, and document exactly the options their argument spec takes."""
from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

from ansible_collections.zopeops.stages.plugins.doc_fragments.zodb import ModuleDocFragment
from ansible_collections.zopeops.stages.plugins.module_utils.files import OWNERSHIP_ARGS

MODULES = pathlib.Path(__file__).resolve().parents[4] / 'plugins' / 'modules'
NAMES = ['zodb_pack', 'zodb_snapshot', 'zodb_restore', 'zodb_replay']


def module_strings(name):
    tree = ast.parse((MODULES / (name + '.py')).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ('DOCUMENTATION', 'EXAMPLES', 'RETURN'):
                found[node.targets[0].id] = node.value.value
    return found, tree


def spec_options(tree, name=None):
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'argument_spec':
            if isinstance(node.value, ast.Name):  # a spec shared through module_utils
                import importlib
                module = importlib.import_module(
                    'ansible_collections.zopeops.stages.plugins.modules.' + name)
                return set(getattr(module, node.value.id))
            # **files.OWNERSHIP_ARGS: the shared owner/group/file_mode options
            return set().union(*({kw.arg} if kw.arg else set(OWNERSHIP_ARGS)
                                 for kw in node.value.keywords))
    raise AssertionError('no argument_spec')


@pytest.mark.parametrize('name', NAMES)
def test_docs_parse_and_cover_the_argument_spec(name):
    strings, tree = module_strings(name)
    assert list(strings) == ['DOCUMENTATION', 'EXAMPLES', 'RETURN']  # top-down, in this order
    doc = yaml.safe_load(strings['DOCUMENTATION'])
    yaml.safe_load(strings['EXAMPLES'])
    yaml.safe_load(strings['RETURN'])
    assert doc['module'] == name
    documented = set(doc.get('options') or {})
    for fragment in doc.get('extends_documentation_fragment', []):
        if not fragment.startswith('zopeops.stages.zodb'):
            continue  # ansible-core's own fragments (action_common_attributes) add no options
        part = fragment.rsplit('.', 1)[-1].upper()
        text = getattr(ModuleDocFragment, 'DOCUMENTATION' if part == 'ZODB' else part)
        documented |= set(yaml.safe_load(text).get('options') or {})
    assert spec_options(tree, name) <= documented, spec_options(tree, name) - documented
    assert doc['attributes']['check_mode']['support'] == 'full'
    source = (MODULES / (name + '.py')).read_text()
    assert 'from __future__ import annotations' in source
    assert 'GNU General Public License v3.0+' in source
    assert 'shell=True' not in source
