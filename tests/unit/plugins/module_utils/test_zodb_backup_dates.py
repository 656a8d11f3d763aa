"""Which backups a restore at a date uses (repozo's own rule: the last one made at or before
it), and the dates a person may give."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.zodb_backup import (
    BackupError, chain_to_restore, repozo_date)


@pytest.mark.parametrize('given,expected', [
    ('2026-12-07 05:10:00', '2026-12-07-05-10-00'),
    ('2026-12-07T05:10:07Z', '2026-12-07-05-10-07'),
    ('2026-12-07 05:10', '2026-12-07-05-10-00'),
    ('2026-12-07', '2026-12-07-00-00-00'),
    ('2026-12-07-05-10-28', '2026-12-07-05-10-28'),
])
def test_dates_in_the_forms_a_person_writes(given, expected):
    assert repozo_date(given) == expected


@pytest.mark.parametrize('given', ['yesterday', '2026-13-07 05:10:00', '2026-12-07 25:00', ''])
def test_no_date_is_refused_naming_it(given):
    with pytest.raises(BackupError, match='is no date and time'):
        repozo_date(given)


def test_the_chain_at_a_date_between_two_backups(tmp_path):
    for name in ('2026-12-07-05-00-00.fs', '2026-12-07-05-00-00.dat',
                 '2026-12-07-05-20-00.deltafs', '2026-12-07-06-00-00.fs'):
        (tmp_path / name).write_text('')
    names = [entry[2] for entry in chain_to_restore(str(tmp_path), '2026-12-07 05:10:00')]
    assert names == ['2026-12-07-05-00-00.fs']
    names = [entry[2] for entry in chain_to_restore(str(tmp_path), '2026-12-07 05:30')]
    assert names == ['2026-12-07-05-00-00.fs', '2026-12-07-05-20-00.deltafs']
    assert [e[2] for e in chain_to_restore(str(tmp_path))] == ['2026-12-07-06-00-00.fs']
    with pytest.raises(BackupError, match='the first one is of 2026-12-07-05-00-00'):
        chain_to_restore(str(tmp_path), '2026-12-06 23:00')
    with pytest.raises(BackupError, match='run a backup first'):
        chain_to_restore(str(tmp_path / 'none'))
