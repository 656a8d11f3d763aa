"""The "Push branding" job template: what a web developer sees when launching it on AWX.

The survey's partner question is rendered the way awx/configure.yml renders it (settings.yml's
zopeops_awx_partners from the inventory's group_vars/all.yml), so these tests check the
choices the controller would show.
"""
from __future__ import annotations

import pathlib

import pytest
import yaml
from jinja2.nativetypes import NativeEnvironment

REPO = pathlib.Path(__file__).resolve().parents[2]
AWX_CONFIG = REPO / 'awx' / 'config'
INVENTORIES = ('local', 'example')
PLAYBOOK = 'playbooks/push_branding.yml'


def load_yaml(path):
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def inventory_vars(inventory):
    return load_yaml(REPO / 'inventories' / inventory / 'group_vars' / 'all.yml')


def template():
    found = [t for t in load_yaml(AWX_CONFIG / 'job_templates.yml')['controller_templates']
             if t['playbook'] == PLAYBOOK]
    assert len(found) == 1
    return found[0]


def question(variable):
    found = [q for q in template()['survey_spec']['spec'] if q['variable'] == variable]
    assert len(found) == 1, variable
    return found[0]


def render(text, **context):
    return NativeEnvironment().from_string(text).render(**context)


def rendered_partner_question(group_vars):
    settings = load_yaml(AWX_CONFIG / 'settings.yml')
    partners = render(settings['zopeops_awx_partners'], zopeops_awx_inventory_vars=group_vars)
    raw = question('partner')
    return {'type': render(raw['type'], zopeops_awx_partners=partners),
            'choices': render(raw['choices'], zopeops_awx_partners=partners),
            'required': raw['required']}


@pytest.mark.parametrize('inventory', INVENTORIES)
def test_partner_choices_are_the_inventory_partners(inventory):
    rendered = rendered_partner_question(inventory_vars(inventory))
    names = [p['name'] for p in inventory_vars(inventory)['zopeops_partners']]
    assert names and rendered['type'] == 'multiplechoice'
    assert list(rendered['choices']) == names
    assert rendered['required'] is True


def test_partner_is_free_text_when_the_inventory_lists_none():
    assert rendered_partner_question({})['type'] == 'text'


@pytest.mark.parametrize('inventory', INVENTORIES)
def test_source_stages_are_the_pipeline_without_its_last_stage(inventory):
    source = question('from_stage')
    assert source['type'] == 'multiplechoice' and source['required'] is True
    assert source['choices'] == inventory_vars(inventory)['zopeops_pipeline'][:-1]


def test_survey_variables_are_what_the_playbook_reads():
    defaults = (REPO / 'roles' / 'push_branding' / 'defaults' / 'main.yml').read_text()
    for variable in ('partner', 'from_stage', 'force'):
        assert '{{ %s | default(' % variable in defaults, variable
    assert question('force')['default'] == 'false'


def test_can_be_launched_in_check_mode_and_never_twice_at_once():
    launched = template()
    assert launched['job_type'] == 'run' and launched['ask_job_type_on_launch'] is True
    # The push page's variables (push_branding_by, ...) are accepted on launch.
    assert launched['ask_variables_on_launch'] is True
    assert launched['allow_simultaneous'] is False
