#!/usr/bin/env python3
"""Turn an example application into a bare git repository with the two demo revisions.

    python build_demo_repo.py DEST                          # this example, e.g. <sandbox>/app.git
    python build_demo_repo.py --source ../plone DEST        # the Plone example (examples/plone)

DEST gets two commits of the source folder's files: first with the banner of v1 (tag
``demo-v1``), then the files as they are (tag ``demo-v2``, branch ``main``). Which file holds
the banner, and its v1 text, is in ``BANNERS`` (by the source folder's name). Author, committer
and dates are fixed, so the same source always gives the same SHAs. If DEST already holds both
tags nothing changes: prints ``exists``; otherwise prints ``created``. Exit code 0 on success.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
TAGS = ('demo-v1', 'demo-v2')
# Per example (its folder's name): the file whose BANNER differs between the tags, and v1's text.
BANNERS = {
    'zopeapp': (pathlib.Path('Products', 'ZopeOpsDemo', 'banner.py'),
                'ZopeOps demo v1: partner brandings'),
    'plone': (pathlib.Path('zopeops_plonedemo', 'banner.py'),
              'ZopeOps Plone demo v1: the banner viewlet'),
}
# What is built or cached in the working folder, never source.
SKIP_NAMES = {'__pycache__', '.pytest_cache', 'build', 'dist', '.git', '.venv', 'venv'}
SKIP_SUFFIXES = ('.pyc', '.pyo', '.egg-info')
IDENTITY = {
    'GIT_AUTHOR_NAME': 'ZopeOps Demo',
    'GIT_AUTHOR_EMAIL': 'demo@zopeops.invalid',
    'GIT_COMMITTER_NAME': 'ZopeOps Demo',
    'GIT_COMMITTER_EMAIL': 'demo@zopeops.invalid',
}
DATES = {'demo-v1': '2024-01-01T12:00:00+00:00', 'demo-v2': '2024-02-01T12:00:00+00:00'}


def git_env(date=None):
    env = {key: value for key, value in os.environ.items() if not key.startswith('GIT_')}
    # No user or system git configuration (signing, hooks, autocrlf) may change the SHAs.
    env.update(IDENTITY, GIT_CONFIG_NOSYSTEM='1', GIT_CONFIG_GLOBAL=os.devnull,
               LC_ALL='C', TZ='UTC')
    if date:
        env['GIT_AUTHOR_DATE'] = env['GIT_COMMITTER_DATE'] = date
    return env


def git(*args, cwd=None, date=None):
    proc = subprocess.run(['git', *args], cwd=cwd, env=git_env(date), capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit('git %s failed in %s (rc=%d): %s'
                         % (' '.join(args), cwd or os.getcwd(), proc.returncode,
                            proc.stderr.strip()))
    return proc.stdout.strip()


def has_tags(dest):
    if not (dest / 'HEAD').exists():
        return False
    for tag in TAGS:
        proc = subprocess.run(['git', '--git-dir', str(dest), 'rev-parse', '--verify', '-q',
                               'refs/tags/' + tag], env=git_env(), capture_output=True,
                              check=False)
        if proc.returncode != 0:
            return False
    return True


def source_files(source):
    """The source folder's files, relative paths, sorted (so the tree never depends on
    directory order)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_NAMES and not d.endswith(SKIP_SUFFIXES))
        for name in sorted(filenames):
            if not name.endswith(SKIP_SUFFIXES):
                files.append(pathlib.Path(dirpath, name).relative_to(source))
    return files


def copy_source(source, work):
    for relative in source_files(source):
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        # git records only the executable bit: keep it, so the tree matches the source.
        os.chmod(target, 0o755 if os.access(source / relative, os.X_OK) else 0o644)


def commit(work, tag):
    git('add', '--all', '.', cwd=work)
    git('commit', '-q', '--no-verify', '--no-gpg-sign', '-m', 'Demo application %s' % tag,
        cwd=work, date=DATES[tag])
    git('tag', tag, cwd=work)


def build(source, dest):
    banner_file, banner_v1 = BANNERS[source.name]
    with tempfile.TemporaryDirectory(prefix='zopeops-demo-repo-') as tmp:
        work = pathlib.Path(tmp, 'work')
        work.mkdir()
        git('init', '-q', '-b', 'main', str(work))
        copy_source(source, work)
        banner = work / banner_file
        banner.write_text(
            "# The one line that differs between the demo revisions "
            "(build_demo_repo.py rewrites it for v1).\n"
            "BANNER = %r\n" % banner_v1, encoding='utf-8')
        commit(work, 'demo-v1')
        copy_source(source, work)
        commit(work, 'demo-v2')
        if not (dest / 'HEAD').exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            git('init', '-q', '--bare', '-b', 'main', str(dest))
        git('push', '-q', '--force', str(dest), 'refs/heads/main:refs/heads/main',
            *('refs/tags/%s:refs/tags/%s' % (tag, tag) for tag in TAGS), cwd=work)


def main(argv):
    args = argv[1:]
    source = HERE
    if len(args) == 3 and args[0] == '--source':
        source = pathlib.Path(args[1]).resolve()
        args = args[2:]
    if len(args) != 1:
        print('usage: build_demo_repo.py [--source EXAMPLE_DIR] DEST  (a bare git repository '
              'to create)', file=sys.stderr)
        return 2
    if source.name not in BANNERS:
        print('%s is not one of the examples (%s); --source takes examples/<name>.'
              % (source, ', '.join(sorted(BANNERS))), file=sys.stderr)
        return 2
    dest = pathlib.Path(args[0]).absolute()
    if has_tags(dest):
        print('exists')
        return 0
    if dest.exists() and any(dest.iterdir()) and not (dest / 'HEAD').exists():
        print('%s exists and is not a git repository; remove it or choose another DEST.'
              % dest, file=sys.stderr)
        return 1
    build(source, dest)
    print('created')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
