# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of zopeops.stages.instance_files: render the files, then one module call.

Each file given by ``template`` is rendered here, on the controller, as
``ansible.builtin.template`` renders (the role's ``templates`` folder and the play's search
path, the task's variables, ``trim_blocks``, ``ansible_managed``), with the file's ``vars``
and, for a file given ``each``, the element as ``item``. The module then gets every file's
content at once. That is the point: a role's folders and files cost one module call on the
host, not a ``stat`` and a ``copy`` per file.
"""
from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

try:  # ansible-core 2.19: templates read from files must be trusted explicitly
    from ansible.template import trust_as_template
except ImportError:  # older ansible-core trusts every template
    def trust_as_template(text):
        return text

try:
    from ansible._internal._templating._template_vars import generate_ansible_template_vars
except ImportError:  # ansible-core before 2.19
    from ansible.template import generate_ansible_template_vars

SPEC_KEYS = ('template', 'src', 'content', 'dest', 'each', 'vars', 'mode', 'owner', 'group', 'key',
             'validate', 'secret', 'keep_values')
PASSED_ON = ('mode', 'owner', 'group', 'validate', 'secret', 'keep_values')


def expand(specs):
    """The files of the task's ``files``, one per element of each ``each`` (whose fields fill
    ``{name}`` in ``dest``, ``key``, ``template`` and ``src``): a list of (spec, item, dest,
    key); every mistake in the specs named at once."""
    files, problems = [], []
    for index, spec in enumerate(specs or []):
        if not isinstance(spec, dict):
            problems.append('files[%d] must be a dict' % index)
            continue
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            problems.append('files[%d] has unknown keys %s; known: %s'
                            % (index, ', '.join(unknown), ', '.join(SPEC_KEYS)))
            continue
        if not spec.get('dest') or sum(name in spec for name in ('template', 'src', 'content')) != 1:
            problems.append('files[%d] needs a dest and one of template, src or content' % index)
            continue
        items = spec.get('each')
        if items is None:
            files.append((spec, None, spec['dest'], spec.get('key') or ''))
            continue
        if not isinstance(items, list):
            problems.append('files[%d] each must be a list' % index)
            continue
        for item in items:
            fields = item if isinstance(item, dict) else {'item': item}
            try:
                one = dict(spec, **{name: spec[name].format(**fields)
                                    for name in ('template', 'src') if name in spec})
                files.append((one, item, spec['dest'].format(**fields),
                              (spec.get('key') or '').format(**fields)))
            except (KeyError, IndexError, ValueError) as exc:
                problems.append('files[%d] dest or key names a field its element lacks: %s'
                                % (index, exc))
                break
    if problems:
        raise AnsibleActionFail('instance_files: %s.' % '; '.join(problems))
    return files


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('directories', 'files', 'stamps', 'write_stamps', 'password_stamp'))

    def _read(self, src):
        """A text file of the role's ``files`` folder (or a path), as ``copy`` finds it."""
        try:
            return self._loader.get_text_file_contents(self._find_needle('files', src))
        except AnsibleError as exc:
            raise AnsibleActionFail('instance_files: %s' % exc) from exc

    def _render(self, spec, item, dest, task_vars):
        try:
            source = self._find_needle('templates', spec['template'])
        except AnsibleError as exc:
            raise AnsibleActionFail('instance_files: %s' % exc) from exc
        text = trust_as_template(self._loader.get_text_file_contents(source))
        searchpath = list(task_vars.get('ansible_search_path', []))
        searchpath.extend([self._loader._basedir, os.path.dirname(source)])
        searchpath = [path for folder in searchpath for path in (os.path.join(folder, 'templates'), folder)]
        variables = dict(task_vars)
        variables.update(generate_ansible_template_vars(
            path=spec['template'], fullpath=source, dest_path=dest,
            include_ansible_managed='ansible_managed' not in variables))
        variables.update(spec.get('vars') or {})
        if item is not None:
            variables['item'] = item
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        try:
            rendered = templar.template(text, escape_backslashes=False, overrides=dict(trim_blocks=True))
        except AnsibleError as exc:
            raise AnsibleActionFail('instance_files: rendering %s for %s failed: %s'
                                    % (spec['template'], dest, exc)) from exc
        return '' if rendered is None else str(rendered)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        files, secrets = [], {}
        for spec, item, dest, key in expand(self._task.args.get('files')):
            if 'content' in spec:
                content = spec['content']
            elif 'src' in spec:
                content = self._read(spec['src'])
            else:
                content = self._render(spec, item, dest, task_vars)
            entry = {'dest': dest, 'key': key}
            entry.update((name, spec[name]) for name in PASSED_ON if spec.get(name) not in (None, ''))
            if entry.get('secret'):  # the module's no_log option: masked in every output
                secrets[dest] = str(content)
            else:
                entry['content'] = str(content)
            files.append(entry)
        module_args = {'directories': self._task.args.get('directories') or [], 'files': files,
                       'secret_contents': secrets}
        module_args.update((name, self._task.args[name]) for name in
                           ('stamps', 'write_stamps', 'password_stamp') if name in self._task.args)
        result.update(self._execute_module(module_name='zopeops.stages.instance_files',
                                           module_args=module_args, task_vars=task_vars))
        return result
