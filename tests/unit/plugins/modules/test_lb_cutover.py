"""lb_cutover's bad input, refused through the real module entry point before anything is
opened or frozen (the steps themselves: tests/unit/plugins/module_utils/test_cutover.py and
tests/integration/lb/test_lb_cutover.py)."""
from __future__ import annotations

import pytest

from support.modules import run_module

GOOD = {'socket': '/nonexistent/haproxy.sock', 'stage': 'test', 'to': 'upgrade',
        'map_file': '/nonexistent/active.map', 'frozen_map_file': '/nonexistent/frozen.map',
        'source': '/nonexistent/Data.fs', 'after_tid': '03f0a1b2c3d4e5f6',
        'zeo_address': '127.0.0.1:1'}


@pytest.mark.parametrize('change, named', [
    ({'lease': 5, 'lease_margin': 5}, 'lease (5.0 s) must be longer than lease_margin'),
    ({'freeze_timeout': -1}, 'freeze_timeout must be 0 or a number of seconds'),
    ({'after_tid': 'not-a-tid'}, 'after_tid:'),
    ({'target_tid': 'zz'}, 'target_tid:'),
    ({'socket': None}, 'socket is required'),
    ({'zeo_address': None}, 'one of the following is required: zeo_address, target_config'),
    ({'source_config': '/x.conf'}, 'mutually exclusive: source|source_config'),
])
def test_bad_input_is_refused_naming_it(change, named):
    args = {key: value for key, value in dict(GOOD, **change).items() if value is not None}
    result = run_module('lb_cutover', args)
    assert result['rc'] == 1 and named in result['msg'], result['msg']
    assert not result.get('changed')


def test_an_unreadable_source_freezes_nothing():
    result = run_module('lb_cutover', GOOD)
    assert result['rc'] == 1 and result['msg'].startswith('Nothing was frozen or switched'), result
    assert result['traffic_on'] is None
