"""status.yml on the real pipeline: the table, status.json and status.html say what the stages
really serve (checked against deployed.json, the app's info view and the ledger), and the page
renders in headless Chromium with a green or red column per stage."""
from __future__ import annotations

import json
import re

import pytest
import requests

from support.browser import dump_dom, screenshot
from support.png import count_near

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

STAGES = ['dev', 'beta', 'test', 'prod']
GREEN, RED = (0x1f, 0x9d, 0x55), (0xd6, 0x45, 0x45)


@pytest.fixture(scope='module')
def status(pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp('status')
    proc = pipeline.playbook('status.yml', {'status_dir': str(out), 'status_heading': 'Now',
                                            'status_fail_unhealthy': False})
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    return proc, out, json.loads((out / 'status.json').read_text())


def info(pipeline, stage):
    return requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                        timeout=10).json()


def test_first_start_says_starts_not_restarts(pipeline):
    out = pipeline.first_run.stdout
    assert re.search(r'dev runs a new release: its ZEO server starts\.', out), out[-5000:]
    assert 'its ZEO server restarts' not in out
    assert re.search(r'beta runs a new release: client1, client2 start\.', out)
    assert not re.search(r'client\d+,? (client\d+ )?restarts?\b', out)


def test_json_says_what_each_stage_serves(pipeline, status):
    _proc, _out, report = status
    assert report['pipeline'] == STAGES
    tags = {pipeline.revision_of('demo-v1'): 'demo-v1', pipeline.revision_of('demo-v2'): 'demo-v2'}
    ledger = {}
    ledger_file = pipeline.sandbox / 'lb' / 'promotions' / 'ledger.jsonl'
    if ledger_file.exists():
        for line in ledger_file.read_text().splitlines():
            entry = json.loads(line)
            ledger[entry['stage']] = entry
    for stage in report['stages']:
        name = stage['name']
        deployed = json.loads((pipeline.sandbox / name / 'deployed.json').read_text())
        live = stage['sides'][0]
        assert live['instance'] == name and live['revision']['commit'] == deployed['revision']
        assert live['revision']['short'] == deployed['revision'][:7]
        if deployed['revision'] in tags:
            assert tags[deployed['revision']] in live['revision']['names']
        seen = info(pipeline, name)
        data = live['data']
        # The last tid is read from the end of Data.fs; the app sees the same (no writes here).
        assert re.fullmatch(r'[0-9a-f]{16}', data['last_tid']) and data['last_tid'] == seen['last_tid']
        assert data['last_time'].startswith('20') and data['size'] > 1000
        assert data['size'] == (pipeline.sandbox / name / 'var' / 'filestorage' / 'Data.fs').stat().st_size
        assert data['marker'] == seen['marker']
        assert stage['traffic'] == 'live' and stage['frozen'] is False
        assert all(c['ok'] and c['latency_ms'] is not None for c in live['clients'])
        assert stage['frontend']['ok'] and stage['health'] == 'ok'
        if name != 'dev':
            twin = stage['sides'][1]
            assert twin['instance'] == name + '_upgrade' and not twin['running']
        if name in ledger:
            assert stage['last_run']['result'] == ledger[name]['result']
            assert stage['last_run']['by'] == ledger[name]['by']
        else:
            assert stage['last_run'] is None
    assert report['healthy'] and report['problems'] == []


def test_table_at_the_end_of_the_run(status):
    proc, _out, report = status
    text = proc.stdout[proc.stdout.index('TASK [Show the pipeline.]'):]
    head = next(line for line in text.splitlines() if line.strip().startswith("- 'Now: "))
    # "dev runs demo-v2 (...); beta, test, prod run demo-v1 (...)." before any promotion,
    # "dev, beta, test, prod run demo-v2 (...)." once every stage runs the same revision
    assert re.search(r'dev(, [a-z]+)* runs? demo-v[12] \(', head) and head.rstrip("'").endswith('.'), head
    for stage in report['stages']:
        assert stage['revision']['short'] in text
        assert stage['sides'][0]['data']['last_tid'] in text
    assert 'pipeline: dev [ok] -> beta [ok] -> test [ok] -> prod [ok]' in text


def test_page_renders_a_green_column_per_stage(status, tmp_path):
    _proc, out, report = status
    page = (out / 'status.html').resolve().as_uri()
    dom = dump_dom(page)
    columns = re.findall(r'data-stage="(\w+)" data-health="(\w+)"', dom)
    assert columns == [(s, 'ok') for s in STAGES]
    for stage in report['stages']:
        assert stage['revision']['short'] in dom and stage['sides'][0]['data']['last_tid'] in dom
    assert 'pipeline status: healthy' in dom
    # The only red a healthy pipeline shows: a stage without a recent backup (this sandbox
    # has made none), marked as such, and its note.
    red = re.findall(r'class="(?:bad-t|problem)"([^>]*)>([^<]*)', dom)
    assert all('data-backup-ok="false"' in attrs or text.startswith('backup: ')
               for attrs, text in red), red
    png = screenshot(page, tmp_path / 'status.png', 1100, 700)
    assert count_near(png, GREEN) > 200 and count_near(png, RED) < 20 + 80 * len(red)
