"""instance_files: a component's folders and files in one call (module and action plugin)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleActionFail
from ansible_collections.zopeops.stages.plugins.action.instance_files import expand
from support.modules import run_module
from support.paths import REPO

ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_keys_changes_and_is_idempotent(tmp_path):
    args = {'directories': [{'path': str(tmp_path / 'etc'), 'mode': '0755'}],
            'files': [{'dest': str(tmp_path / 'etc' / 'a.conf'), 'content': 'a = 1\n',
                       'mode': '0640', 'key': 'client1'},
                      {'dest': str(tmp_path / 'etc' / 'b.conf'), 'content': 'b\n', 'key': 'all'}]}
    first = run_module('instance_files', args, diff=True)
    assert first['rc'] == 0 and first['changed'] and first['files_changed'], first
    assert first['changed_keys'] == ['client1', 'all']
    assert (tmp_path / 'etc' / 'a.conf').read_text() == 'a = 1\n'
    assert mode_of(tmp_path / 'etc' / 'a.conf') == 0o640
    umask = os.umask(0)
    os.umask(umask)
    assert mode_of(tmp_path / 'etc' / 'b.conf') == 0o666 & ~umask
    assert [d['after'] for d in first['diff'] if 'after_header' in d] == ['a = 1\n', 'b\n']
    again = run_module('instance_files', args)
    assert again['changed'] is False and again['changed_keys'] == [] and not again['files_changed']

    args['files'][1]['content'] = 'b = 2\n'
    os.chmod(tmp_path / 'etc' / 'a.conf', 0o600)
    check = run_module('instance_files', args, check=True, diff=True)
    assert check['changed'] and check['changed_keys'] == ['client1', 'all']
    assert (tmp_path / 'etc' / 'b.conf').read_text() == 'b\n', 'check mode wrote the file'
    assert mode_of(tmp_path / 'etc' / 'a.conf') == 0o600, 'check mode changed the mode'
    assert [d['before'] for d in check['diff'] if 'before_header' in d] == ['b\n']


def test_a_failed_validation_keeps_the_old_file_and_says_why(tmp_path):
    dest = tmp_path / 'haproxy.cfg'
    dest.write_text('good\n')
    result = run_module('instance_files', {'files': [
        {'dest': str(dest), 'content': 'bad\n', 'validate': 'grep -q good %s'}]})
    assert result['failed'] and 'failed its check' in result['msg'] and str(dest) in result['msg']
    assert dest.read_text() == 'good\n'
    assert sorted(os.listdir(tmp_path)) == ['haproxy.cfg'], 'a temporary file was left behind'
    ok = run_module('instance_files', {'files': [
        {'dest': str(dest), 'content': 'good too\n', 'validate': 'grep -q good %s'}]})
    assert ok['changed'] and dest.read_text() == 'good too\n'


def test_a_secret_file_has_no_diff_and_bad_specs_are_named(tmp_path):
    result = run_module('instance_files', {'files': [
        {'dest': str(tmp_path / 's'), 'content': 'password=x\n', 'secret': True}]}, diff=True)
    assert result['changed'] and 'password' not in repr(result.get('diff', ''))
    result = run_module('instance_files', {'files': [
        {'dest': str(tmp_path / 'x'), 'content': 'a', 'size': 1},
        {'dest': str(tmp_path / 'x'), 'content': 'b'},
        {'dest': str(tmp_path / 'y'), 'content': 'c', 'validate': 'true'},
        {'dest': str(tmp_path / 'missing' / 'z'), 'content': 'd'}]})
    assert result['failed']
    assert 'files[0] (%s) has unknown keys size' % (tmp_path / 'x') in result['msg']
    assert 'files[1]: %s is given twice' % (tmp_path / 'x') in result['msg']
    assert 'files[2] (%s): validate must contain %%s' % (tmp_path / 'y') in result['msg']
    assert not (tmp_path / 'x').exists(), 'a bad spec list changed something'


def test_a_map_keeps_the_values_the_host_holds_where_they_are_allowed(tmp_path):
    """keep_values: a switch or a freeze made at runtime survives a new rendering of the map;
    a stage the file lacks, or a value not allowed, gets the rendered default."""
    active, frozen = tmp_path / 'active.map', tmp_path / 'frozen.map'
    keep = {'dev': ['be_dev_live'], 'test': ['be_test_live', 'be_test_upgrade']}
    rendered = '# stage -> backend\ndev be_dev_live\ntest be_test_live\nprod be_prod_live\n'
    args = {'files': [{'dest': str(active), 'content': rendered, 'keep_values': keep},
                      {'dest': str(frozen), 'content': 'dev 0\ntest 0\n',
                       'keep_values': '[0-9]{1,10}'}]}
    first = run_module('instance_files', args)
    assert first['changed'] and active.read_text() == rendered
    active.write_text('# an operator\'s note\ndev be_dev_upgrade\ntest be_test_upgrade  # switched\n')
    frozen.write_text('dev 1765000000\ntest 12x\n')
    check = run_module('instance_files', args, check=True, diff=True)
    assert check['changed'] and 'be_test_upgrade' in check['diff'][0]['after']
    assert 'be_dev_upgrade' in active.read_text(), 'check mode wrote the map'
    kept = run_module('instance_files', args)
    assert kept['changed']
    assert active.read_text() == ('# stage -> backend\ndev be_dev_live\ntest be_test_upgrade\n'
                                  'prod be_prod_live\n')
    assert frozen.read_text() == 'dev 1765000000\ntest 0\n'
    again = run_module('instance_files', args)
    assert again['changed'] is False
    bad = run_module('instance_files', {'files': [
        {'dest': str(active), 'content': rendered, 'keep_values': ['be_dev_live']}]})
    assert bad['failed'] and 'keep_values must be a regular expression or a dict' in bad['msg']


def test_expand_makes_one_file_per_element_and_names_mistakes():
    files = expand([{'template': 't.j2', 'each': [{'name': 'c1'}, {'name': 'c2'}],
                     'dest': '/etc/zope-{name}.ini', 'key': '{name}'},
                    {'template': 'unit.{item}.j2', 'each': ['service', 'timer'],
                     'dest': '/etc/u.{item}'},
                    {'content': 'x', 'dest': '/etc/x'}])
    assert [(entry[2], entry[3]) for entry in files] == [
        ('/etc/zope-c1.ini', 'c1'), ('/etc/zope-c2.ini', 'c2'),
        ('/etc/u.service', ''), ('/etc/u.timer', ''), ('/etc/x', '')]
    assert [entry[0]['template'] for entry in files[2:4]] == ['unit.service.j2', 'unit.timer.j2']
    assert files[0][1] == {'name': 'c1'}
    with pytest.raises(AnsibleActionFail) as info:
        expand([{'dest': '/a'}, {'content': 'x', 'template': 't', 'dest': '/b'},
                {'content': 'x', 'dest': '/c/{port}', 'each': [{'name': 'c1'}]},
                {'content': 'x', 'dest': '/d', 'loop': []}])
    message = str(info.value)
    assert 'files[0] needs a dest and one of template, src or content' in message
    assert 'files[1] needs a dest' in message
    assert "files[2] dest or key names a field its element lacks: 'port'" in message
    assert 'files[3] has unknown keys loop' in message


def test_a_role_renders_as_template_does_in_one_call(tmp_path):
    """A real playbook: the role's templates and files, item, vars and ansible_managed, and the
    same bytes as ansible.builtin.template writes."""
    role = tmp_path / 'roles' / 'demo'
    (role / 'templates').mkdir(parents=True)
    (role / 'files').mkdir()
    (role / 'tasks').mkdir()
    (role / 'templates' / 'client.conf.j2').write_text(
        '# {{ ansible_managed }}\nname = {{ item.name }}\n{% if cache %}\ncache = on\n{% endif %}\n'
        'port = {{ item.port }}\n')
    (role / 'files' / 'script.py').write_text('print("hello")\n')
    out = tmp_path / 'out'
    (role / 'tasks' / 'main.yml').write_text(yaml.safe_dump([
        {'name': 'Ours.', 'zopeops.stages.instance_files': {
            'directories': [{'path': str(out), 'mode': '0755'}],
            'files': [{'template': 'client.conf.j2', 'each': '{{ clients }}',
                       'dest': str(out) + '/{name}.conf', 'key': '{name}', 'vars': {'cache': True}},
                      {'src': 'script.py', 'dest': str(out / 'script.py'), 'key': 'script'},
                      {'content': 'password={{ secret }}\n', 'dest': str(out / 'pgpass'),
                       'mode': '0600', 'secret': True, 'key': 'all'}]},
         'register': 'ours'},
        {'name': 'Theirs.', 'ansible.builtin.template': {
            'src': 'client.conf.j2', 'dest': str(out) + '/template-{{ item.name }}.conf'},
         'loop': '{{ clients }}', 'vars': {'cache': True}},
        {'name': 'Say.', 'ansible.builtin.copy': {'content': '{{ ours.changed_keys | to_json }}',
                                                  'dest': str(tmp_path / 'keys.json')}}]))
    playbook = tmp_path / 'play.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False,
        'vars': {'clients': [{'name': 'client1', 'port': 8081}, {'name': 'client2', 'port': 8082}],
                 'secret': 's3cr3t-value'},
        'roles': ['demo']}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_ROLES_PATH=str(tmp_path / 'roles'))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, '-i', 'localhost,', '-c', 'local', '-vvv', '--diff',
                           '-e', 'ansible_python_interpreter=' + sys.executable, str(playbook)],
                          cwd=str(tmp_path), capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for name in ('client1', 'client2'):
        assert (out / (name + '.conf')).read_bytes() == (out / ('template-%s.conf' % name)).read_bytes()
    assert 'cache = on\nport = 8082\n' in (out / 'client2.conf').read_text()
    assert (out / 'script.py').read_text() == 'print("hello")\n'
    assert (tmp_path / 'keys.json').read_text() == '["client1", "client2", "script", "all"]'
    assert (out / 'pgpass').read_text() == 'password=s3cr3t-value\n'
    assert 's3cr3t-value' not in proc.stdout + proc.stderr, 'a secret file reached the output'
    assert 'cache = on' in proc.stdout, 'the diff of the other files is not shown'


def test_a_stamp_is_stale_until_written_and_again_when_a_file_it_depends_on_changes(tmp_path):
    deployed = tmp_path / 'deployed.json'
    deployed.write_text('{"revision": "a"}\n')
    stamp = {'key': 'grant', 'dest': str(tmp_path / 'grant.stamp'), 'content': '{"role": "R"}',
             'depends': [str(deployed), str(tmp_path / 'missing.py')]}
    read = run_module('instance_files', {'stamps': [stamp]})
    assert read['rc'] == 0 and read['stale_stamps'] == ['grant'] and not read['changed'], read
    assert not (tmp_path / 'grant.stamp').exists(), 'reading wrote the stamp'
    check = run_module('instance_files', {'stamps': [stamp], 'write_stamps': True}, check=True)
    assert check['stamps'][0]['changed'] and not (tmp_path / 'grant.stamp').exists()
    written = run_module('instance_files', {'stamps': [stamp], 'write_stamps': True})
    assert written['stamps'] == [{'key': 'grant', 'dest': stamp['dest'], 'stale': False,
                                  'changed': True}], written
    text = (tmp_path / 'grant.stamp').read_text()
    assert text.startswith('{"role": "R"}\ndepends %s ' % deployed) and 'missing.py absent' in text
    assert run_module('instance_files', {'stamps': [stamp]})['stale_stamps'] == []
    again = run_module('instance_files', {'stamps': [stamp], 'write_stamps': True})
    assert again['stamps'][0]['changed'] is False
    # A new deployment (or another role) makes the step run again.
    deployed.write_text('{"revision": "b"}\n')
    assert run_module('instance_files', {'stamps': [stamp]})['stale_stamps'] == ['grant']
    stamp['content'] = '{"role": "Other"}'
    run_module('instance_files', {'stamps': [stamp], 'write_stamps': True})
    assert run_module('instance_files', {'stamps': [stamp]})['stale_stamps'] == []
    bad = run_module('instance_files', {'stamps': [{'key': 'x', 'dest': str(tmp_path / 'x')}]})
    assert bad['failed'] and 'stamps[0] needs a key, a dest and a content' in bad['msg']


def test_the_password_stamp_in_the_same_call_says_when_the_account_changed(tmp_path):
    files = [{'dest': str(tmp_path / 'a.conf'), 'content': 'a\n', 'key': 'all'}]
    wanted = {'dest': str(tmp_path / 'inituser.applied'), 'account': 'admin',
              'password': 'not-shown-4711'}
    first = run_module('instance_files', {'files': files, 'password_stamp': wanted})
    assert first['password_stamp'] == {'changed': True, 'account_changed': True,
                                       'migrated': False}, first
    assert mode_of(tmp_path / 'inituser.applied') == 0o600
    assert 'not-shown-4711' not in (tmp_path / 'inituser.applied').read_text()
    assert 'not-shown-4711' not in repr(first)
    again = run_module('instance_files', {'files': files, 'password_stamp': wanted})
    assert again['changed'] is False and again['password_stamp']['account_changed'] is False
    wanted['password'] = 'another-0815'
    check = run_module('instance_files', {'files': files, 'password_stamp': wanted}, check=True)
    assert check['changed'] and check['password_stamp']['account_changed']
    assert run_module('instance_files', {'files': files, 'password_stamp': wanted})['changed']
    bad = run_module('instance_files', {'password_stamp': dict(wanted, account='a:b')})
    assert bad['failed'] and 'no ":"' in bad['msg'] and 'another-0815' not in repr(bad)
