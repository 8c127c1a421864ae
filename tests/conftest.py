import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Keep tests quiet and reproducible on a shared 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A cache of the session's own (exported graphs, the fused kernel; subprocesses inherit it): the
# tests share the exports of their same tiny network, and never read or fill ~/.cache/mtdense.
# Each pytest-xdist worker (make test runs two) is a process with a cache of its own.
_CACHE = tempfile.mkdtemp(prefix="mtdense-test-cache-")
os.environ["MTDENSE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def model():
    """A tiny random-init network (16-channel decoder), shared by a module's tests."""
    import mtdense

    torch.manual_seed(0)
    return mtdense.create_model(decoder_channels=16).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    """:func:`model` saved as a checkpoint."""
    import mtdense

    return mtdense.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pth")


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a file system with almost no space left (a 64 KiB tmpfs, where this process may
    mount one, as root in CI); else the test is skipped with the reason."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); run as root to test a full disk")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def pytest_collection_modifyitems(config, items):
    """Files that hold a test marked slow run first, each file's tests in their order.

    ``make test`` runs two pytest-xdist workers that each take a whole file at a time, in this
    order: the longest files (the runtimes' file, where torch.compile's inductor builds the
    network's kernels, takes a third of the suite on a cold inductor cache) then start at once
    instead of leaving one worker alone with them at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within the groups is kept
