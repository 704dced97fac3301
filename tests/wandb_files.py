"""Read W&B offline run files (.wandb) so tests can check what was logged.

The file is a 7-byte W&B header followed by LevelDB-style log records (32 KiB blocks,
7-byte record headers: crc, length, type) holding protobuf `Record` messages.
"""

import glob
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            chunks = [payload]
        elif kind == FIRST:
            chunks = [payload]
            continue
        elif kind == MIDDLE:
            chunks.append(payload)
            continue
        else:
            chunks.append(payload)
        rec = pb.Record()
        rec.ParseFromString(b"".join(chunks))
        chunks = []
        yield rec


def read_run(path):
    """{'group', 'job_type', 'name', 'config', 'summary', 'history'} of one offline run."""
    import json

    out = {"config": {}, "summary": {}, "history": []}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(group=rec.run.run_group, job_type=rec.run.job_type, name=rec.run.display_name)
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                   for i in rec.history.item})
    return out


def all_runs(root):
    return [read_run(f) for f in sorted(glob.glob(f"{root}/**/run-*.wandb", recursive=True))]
