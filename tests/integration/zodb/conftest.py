"""Fixtures for the zodb_* module tests: real ZODB data and a real ZEO server."""
from __future__ import annotations

import os
import sys

import pytest

# The helpers beside this file (this directory is no package; see zodbdata.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zodbdata import Zeo, write_transactions


@pytest.fixture
def storage_factory(tmp_path):
    """Make an instance-like directory with a real Data.fs (+ blobs)."""
    def make(name='src', count=10, blobs_every=3, garbage=False):
        base = tmp_path / name
        (base / 'filestorage').mkdir(parents=True)
        data = str(base / 'filestorage' / 'Data.fs')
        blobs = str(base / 'blobstorage')
        write_transactions(data, blobs, count=count, blobs_every=blobs_every, garbage=garbage)
        return data, blobs
    return make


@pytest.fixture
def zeo_factory(processes, tmp_path):
    def start(data_path, blob_dir=None):
        return Zeo(processes, str(tmp_path), data_path, blob_dir)
    return start
