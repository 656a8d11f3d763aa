# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's folders and configuration files, many in one module call.

The modules ``instance_dirs`` (folders) and ``instance_files`` (folders and files) share this
code. A file or a folder gets its mode, owner and group with ``AnsibleModule``'s own helpers
(``load_file_common_arguments`` and ``set_fs_attributes_if_different``), so they mean what
they mean for ``ansible.builtin.file`` and ``ansible.builtin.copy``. A file is replaced in one
rename after its content is written, fsynced and (optionally) validated, so a service that
reads it meanwhile sees the old file or the new one.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess

from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write

DIR_KEYS = ('path', 'paths', 'mode', 'owner', 'group')
FILE_KEYS = ('dest', 'content', 'mode', 'owner', 'group', 'key', 'validate', 'secret',
             'keep_values')


def normalise_dirs(module, items, who='instance_dirs'):
    """Strings and dicts -> dicts with path/mode/owner/group; every mistake named at once."""
    entries, problems = [], []
    for index, item in enumerate(items or []):
        spec = {'path': item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not (spec.get('path') or 'paths' in spec) or (
                'path' in spec and 'paths' in spec):
            problems.append('directories[%d] must be a path or a dict with a path or paths'
                            % index)
            continue
        unknown = sorted(set(spec) - set(DIR_KEYS))
        if unknown:
            problems.append('directories[%d] (%s) has unknown keys %s; known: %s'
                            % (index, spec.get('path') or 'paths', ', '.join(unknown),
                               ', '.join(DIR_KEYS)))
            continue
        paths = spec['paths'] if 'paths' in spec else [spec['path']]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            problems.append('directories[%d] paths must be a list of paths' % index)
            continue
        mode = spec.get('mode')
        for path in paths:
            # An int is the mode itself (YAML's unquoted 0755 is 493 = 0o755), as for file.
            entries.append({'path': os.path.abspath(path),
                            'mode': None if mode in (None, '') else mode,
                            'owner': spec.get('owner') or None,
                            'group': spec.get('group') or None})
    if problems:
        module.fail_json(msg='%s: %s.' % (who, '; '.join(problems)))
    return entries


def _attributes(module, path, entry, diff, who):
    file_args = module.load_file_common_arguments(
        {'path': path, 'mode': entry.get('mode'), 'owner': entry.get('owner'),
         'group': entry.get('group')})
    try:
        return module.set_fs_attributes_if_different(file_args, False, diff)
    except Exception as exc:  # AnsibleModule fails itself on most errors; name the path
        module.fail_json(msg='%s: could not set mode/owner/group of %s: %s' % (who, path, exc))


def ensure_dir(module, entry, who='instance_dirs'):
    """One folder: created (with its parents) when missing, then its mode, owner and group."""
    path = entry['path']
    result = {'path': path, 'created': False, 'changed': False}
    diff = {'before': {'path': path}, 'after': {'path': path}}
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg='%s: %s exists but is not a folder. Move it away or fix the path.'
                             % (who, path))
    if not os.path.isdir(path):
        result.update(created=True, changed=True)
        diff['before']['state'] = 'absent'
        diff['after']['state'] = 'directory'
        if module.check_mode:
            return result, diff
        try:
            os.makedirs(path)
        except OSError as exc:
            module.fail_json(msg='%s: could not create %s: %s. Check the rights on its parent '
                                 'folder.' % (who, path, exc))
    result['changed'] = _attributes(module, path, entry, diff, who) or result['changed']
    return result, diff


def ensure_dirs(module, items, who='instance_dirs'):
    """Every folder of ``items`` in order; (results, diffs of the changed ones)."""
    results, diffs = [], []
    for entry in normalise_dirs(module, items, who):
        result, diff = ensure_dir(module, entry, who)
        results.append(result)
        if result['changed']:
            diffs.append(diff)
    return results, diffs


def normalise_files(module, items, who='instance_files'):
    """Check the files' specs; every mistake named at once."""
    problems, seen = [], set()
    for index, spec in enumerate(items or []):
        if not isinstance(spec, dict) or not spec.get('dest') or not isinstance(
                spec.get('content'), str):
            problems.append('files[%d] must be a dict with dest and content (a string)' % index)
            continue
        unknown = sorted(set(spec) - set(FILE_KEYS))
        if unknown:
            problems.append('files[%d] (%s) has unknown keys %s; known: %s'
                            % (index, spec['dest'], ', '.join(unknown), ', '.join(FILE_KEYS)))
        dest = os.path.abspath(spec['dest'])
        if dest in seen:
            problems.append('files[%d]: %s is given twice' % (index, dest))
        seen.add(dest)
        validate = spec.get('validate')
        if validate and '%s' not in validate:
            problems.append('files[%d] (%s): validate must contain %%s, the path of the new '
                            'file to check' % (index, dest))
        keep = spec.get('keep_values')
        if keep is not None and not (isinstance(keep, str) or (isinstance(keep, dict) and all(
                isinstance(values, list) for values in keep.values()))):
            problems.append('files[%d] (%s): keep_values must be a regular expression or a dict '
                            'of key -> list of values' % (index, dest))
    if problems:
        module.fail_json(msg='%s: %s.' % (who, '; '.join(problems)))
    return items or []


def _read(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _validate(module, command, path, dest, who):
    argv = [part.replace('%s', path) for part in shlex.split(command)]  # never a shell
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        output = proc.stdout.decode('utf-8', 'replace').strip()[-2000:]
        module.fail_json(msg='%s: the new %s failed its check (%s): %s. The file was not changed; '
                             'fix the template or the variables it uses.'
                             % (who, dest, command, output), rc=proc.returncode)


def map_entries(text):
    """A map file's ``key value`` lines -> {key: value} (the first word after the key; a
    comment, a blank line or a key alone is no entry; a later line of a key wins)."""
    entries = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and not words[0].startswith('#'):
            entries[words[0]] = words[1]
    return entries


def keep_map_values(content, before, keep):
    """The map text ``content`` with, for each of its ``key value`` lines, the value that
    the file on the host (``before``, its text or None) holds for that key instead, where
    ``keep`` allows it: a regular expression the whole value must match, or a dict of key ->
    the values that may stay. A value changed at runtime (a switch, a freeze) so survives a
    new rendering of the file; a key the file lacks, or a value not allowed, gets
    ``content``'s."""
    current = map_entries(before or '')
    lines = []
    for line in content.splitlines(True):
        words = line.split()
        if len(words) >= 2 and not words[0].startswith('#') and words[0] in current:
            value = current[words[0]]
            allowed = (re.fullmatch(keep, value) if isinstance(keep, str)
                       else value in keep.get(words[0], []))
            if allowed and value != words[1]:
                line = '%s %s%s' % (words[0], value, '\n' if line.endswith('\n') else '')
        lines.append(line)
    return ''.join(lines)


def ensure_file(module, spec, who='instance_files'):
    """One file: its content (written and renamed in place when it differs), then its mode,
    owner and group (a new file without a mode gets the umask's). A map file given
    ``keep_values`` keeps the values the host's file holds where they are allowed
    (keep_map_values)."""
    dest = os.path.abspath(spec['dest'])
    if os.path.isdir(dest):
        module.fail_json(msg='%s: %s is a folder; a file was expected there. Move it away or fix '
                             'the path.' % (who, dest))
    before = _read(dest)
    if spec.get('keep_values') is not None:
        spec = dict(spec, content=keep_map_values(
            spec['content'], None if before is None else before.decode('utf-8', 'replace'),
            spec['keep_values']))
    content = spec['content'].encode('utf-8')
    result = {'dest': dest, 'key': spec.get('key') or '', 'changed': False,
              'content_changed': False}
    diff = {'before_header': dest, 'after_header': dest}
    if before != content:
        result.update(changed=True, content_changed=True)
        if not spec.get('secret'):
            diff['before'] = '' if before is None else before.decode('utf-8', 'replace')
            diff['after'] = spec['content']
        if module.check_mode:
            return result, diff
        folder = os.path.dirname(dest)
        if not os.path.isdir(folder):
            module.fail_json(msg='%s: the folder of %s does not exist. Create it first (the '
                                 'directories option creates folders before files).'
                                 % (who, dest))
        umask = os.umask(0)
        os.umask(umask)
        validate = spec.get('validate')
        # A new file gets the umask's mode, as copy and template give it, until its mode is set.
        atomic_write(dest, spec['content'], mode=0o666 & ~umask,
                     check=(lambda tmp: _validate(module, validate, tmp, dest, who)) if validate else None)
    attr_diff = {'before': {}, 'after': {}}
    if _attributes(module, dest, spec, attr_diff, who):
        result['changed'] = True
    return result, diff


def stamp_text(stamp):
    """What a stamp file holds for ``stamp``: its content, then one line per file it depends
    on with that file's SHA-256 (``absent`` when it does not exist), read on the host."""
    lines = [stamp['content'].rstrip('\n')]
    for path in stamp.get('depends') or []:
        data = _read(path)
        lines.append('depends %s %s' % (path, 'absent' if data is None
                                        else hashlib.sha256(data).hexdigest()))
    return '\n'.join(lines) + '\n'


def ensure_stamps(module, stamps, write, who='instance_files'):
    """Each stamp read (and with ``write`` written where it differs): a list of
    {key, dest, stale, changed}. A stamp is stale when its file is missing or holds another
    text: the step it records has to run (again)."""
    results = []
    for index, stamp in enumerate(stamps or []):
        if not stamp.get('key') or not stamp.get('dest') or not isinstance(stamp.get('content'), str):
            module.fail_json(msg='%s: stamps[%d] needs a key, a dest and a content (a string).'
                                 % (who, index))
        dest = os.path.abspath(stamp['dest'])
        wanted = stamp_text(stamp)
        before = _read(dest)
        stale = before != wanted.encode('utf-8')
        changed = False
        if stale and write:
            changed = True
            if not module.check_mode:
                atomic_write(dest, wanted, mode=0o644)
        results.append({'key': stamp['key'], 'dest': dest, 'stale': stale and not changed,
                        'changed': changed})
    return results
