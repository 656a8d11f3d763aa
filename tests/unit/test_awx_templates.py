"""The AWX job templates as code (awx/config/) stay in step with the pipeline and the playbooks.

What an operator would check on the controller: "Promote stage" offers exactly the stages that
can be promoted (the pipeline without its head), every playbook can be launched from a job
template, and the templates point at the project and inventory that awx/ defines.
"""
from __future__ import annotations

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
AWX_CONFIG = REPO / 'awx' / 'config'
INVENTORIES = ('local', 'example')


def load_yaml(path):
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def templates():
    return load_yaml(AWX_CONFIG / 'job_templates.yml')['controller_templates']


def template_for(playbook):
    found = [t for t in templates() if t['playbook'] == playbook]
    assert len(found) == 1, 'expected one job template for %s, found %d' % (playbook, len(found))
    return found[0]


def survey_question(template, variable):
    assert template.get('survey_enabled') is True, template['name'] + ' has no survey'
    found = [q for q in template['survey_spec']['spec'] if q['variable'] == variable]
    assert len(found) == 1, '%s: no survey question for %s' % (template['name'], variable)
    return found[0]


def pipeline(inventory):
    return load_yaml(REPO / 'inventories' / inventory / 'group_vars' / 'all.yml')['zopeops_pipeline']


@pytest.mark.parametrize('inventory', INVENTORIES)
@pytest.mark.parametrize('playbook', ['playbooks/promote.yml', 'playbooks/rollback.yml'])
def test_stage_choices_are_the_pipeline_without_its_head(inventory, playbook):
    question = survey_question(template_for(playbook), 'stage')
    assert question['type'] == 'multiplechoice'
    assert question['required'] is True
    assert question['choices'] == pipeline(inventory)[1:]


def test_the_inventories_agree_on_the_pipeline():
    # One set of job templates serves both; a different pipeline needs its own survey choices.
    assert len({tuple(pipeline(name)) for name in INVENTORIES}) == 1


def test_promote_actions_are_the_roles_actions():
    specs = load_yaml(REPO / 'roles' / 'promote' / 'meta' / 'argument_specs.yml')
    role_actions = specs['argument_specs']['main']['options']['promote_action']['choices']
    question = survey_question(template_for('playbooks/promote.yml'), 'promote_action')
    # A restore has its own job template (playbooks/restore.yml).
    assert question['choices'] == [action for action in role_actions if action != 'restore']
    assert 'restore' in role_actions
    assert question['default'] == 'run'


@pytest.mark.parametrize('playbook', sorted(p.name for p in (REPO / 'playbooks').glob('*.yml')))
def test_every_playbook_has_a_job_template(playbook):
    template_for('playbooks/' + playbook)


def test_every_job_template_runs_an_existing_playbook():
    for template in templates():
        assert (REPO / template['playbook']).is_file(), template['name']


def test_configure_site_can_run_in_check_mode():
    template = template_for('playbooks/site.yml')
    assert template['job_type'] == 'run'
    assert template['ask_job_type_on_launch'] is True
    assert template['ask_diff_mode_on_launch'] is True


def test_templates_use_the_project_and_inventory_defined_beside_them():
    project = load_yaml(AWX_CONFIG / 'projects.yml')['controller_projects'][0]['name']
    inventory_config = load_yaml(AWX_CONFIG / 'inventories.yml')
    inventory = inventory_config['controller_inventories'][0]['name']
    source = inventory_config['controller_inventory_sources'][0]
    assert source['inventory'] == inventory and source['source_project'] == project
    settings = load_yaml(AWX_CONFIG / 'settings.yml')
    assert (REPO / settings['zopeops_awx_inventory_path'] / 'hosts.yml').is_file()
    for template in templates():
        assert template['project'] == project, template['name']
        assert template['inventory'] == inventory, template['name']


def test_names_are_unique():
    names = [t['name'] for t in templates()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize('inventory', INVENTORIES)
def test_backup_stage_choices_are_the_whole_pipeline(inventory):
    question = survey_question(template_for('playbooks/backup.yml'), 'stage')
    assert question['type'] == 'multiplechoice' and question['required'] is True
    assert question['choices'] == pipeline(inventory)


@pytest.mark.parametrize('inventory', INVENTORIES)
def test_restore_offers_the_stages_with_a_twin_and_the_other_stage_flag(inventory):
    template = template_for('playbooks/restore.yml')
    question = survey_question(template, 'stage')
    assert question['choices'] == pipeline(inventory)[1:] and question['required'] is True
    assert survey_question(template, 'allow_other_stage')['default'] == 'false'
    assert survey_question(template, 'backup_at')['required'] is False
    assert template['allow_simultaneous'] is False
