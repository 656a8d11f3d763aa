"""tests/support/nspawn.py's host preparation: the inotify instance limit that several booted
systemd machines at once need."""
from __future__ import annotations

from support import nspawn


def test_a_low_inotify_limit_is_raised(tmp_path):
    limit = tmp_path / 'max_user_instances'
    limit.write_text('128\n')
    assert nspawn.ensure_inotify_instances(limit, needed=1024) == 1024
    assert limit.read_text() == '1024\n'


def test_a_higher_inotify_limit_is_never_lowered(tmp_path):
    limit = tmp_path / 'max_user_instances'
    limit.write_text('8192\n')
    assert nspawn.ensure_inotify_instances(limit, needed=1024) == 8192
    assert limit.read_text() == '8192\n'


def test_a_limit_that_cannot_be_written_is_reported_as_it_is():
    class ReadOnly:  # as /proc/sys for an account that is not root
        def read_text(self):
            return '128\n'

        def write_text(self, text):
            raise PermissionError('read-only')

    assert nspawn.ensure_inotify_instances(ReadOnly(), needed=1024) == 128
