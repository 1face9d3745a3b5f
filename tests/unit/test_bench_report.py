"""The benchmark's issue 14 report: the requests it sends, the n/a cells of a peer that lacks an
operation, and the verdicts against the targets (from made-up cells: no server runs here)."""

from __future__ import annotations

import base64
import json
import random

from bench import ceilings
from bench.load import Result
from bench.report import asymmetric_summary, asymmetric_targets, ratio, rows_markdown
from bench.workloads import ASYMMETRIC, MESSAGE, Fixture, Row, workload

SIGN_P256, SIGN_RSA, VERIFY, MAC = (a.name for a in ASYMMETRIC)
MAC_SLOT = ASYMMETRIC[3].slot


def fixture() -> Fixture:
    fx = Fixture("sym", [b"{}"], signature="c2ln")
    for a in ASYMMETRIC:
        fx.keys[a.slot] = f"key-{a.slot.replace(' ', '-')}"
    return fx


def cell(rate: float, cpu_us: float = 300.0, seconds: float = 1.0) -> Result:
    n = int(rate * seconds)
    return Result(seconds, [0.001] * n, answered=n, server_cpu=n * cpu_us / 1e6)


def rows(rates: dict[str, dict[int, float]], peer: float | None = 500.0) -> list[Row]:
    out = []
    for name, by_c in rates.items():
        for c, rate in by_c.items():
            results = {"hsmkms": cell(rate)}
            if peer is not None:
                results["moto"] = cell(peer, 1800.0)
            out.append(Row(name, c, results))
    return out


def test_the_requests_are_32_raw_bytes_on_the_key_of_their_spec():
    fx = fixture()
    sent = {}
    for a in ASYMMETRIC:
        target, body = workload(a.name, fx, random.Random(1))()
        assert target == f"TrentService.{a.operation}"
        sent[a.name] = json.loads(body)
        assert base64.b64decode(sent[a.name]["Message"]) == MESSAGE
        assert len(MESSAGE) == 32
        assert sent[a.name]["KeyId"] == fx.keys[a.slot]
    assert sent[SIGN_RSA]["SigningAlgorithm"] == "RSASSA_PSS_SHA_256"
    assert sent[SIGN_P256]["MessageType"] == "RAW"
    assert sent[VERIFY]["Signature"] == "c2ln"
    assert sent[MAC] == {"KeyId": fx.keys[MAC_SLOT], "Message": sent[MAC]["Message"],
                         "MacAlgorithm": "HMAC_SHA_256"}  # fmt: skip
    # Sign and Verify of ECC_NIST_P256 share the key that made the signature
    assert sent[SIGN_P256]["KeyId"] == sent[VERIFY]["KeyId"]


def test_a_peer_without_the_operation_reads_n_a_with_the_reason():
    row = Row(MAC, 8, {"hsmkms": cell(3000)}, {"moto": "GenerateMac: 500 non-JSON body"})
    assert ratio(row) == "n/a"
    line = rows_markdown([row])[-1]
    assert "| n/a |" in line and "GenerateMac: 500 non-JSON body" in line
    summary = " ".join(asymmetric_summary([row], {}))
    assert "moto GenerateMac HMAC_256 HMAC_SHA_256: GenerateMac: 500 non-JSON body" in summary


def test_targets_met_and_not_met():
    rates = {
        SIGN_P256: {1: 1800, 8: 4000, 32: 4200},
        SIGN_RSA: {1: 790, 8: 910, 32: 880},
        VERIFY: {1: 2300, 32: 5000},
        "GenerateDataKey": {1: 2400, 8: 5900, 32: 6900},
        MAC: {1: 2300, 8: 3500, 32: 6500},
    }
    ceil = {
        "cores": 2,
        "generator_us": 15.0,
        "sign": {ceilings.RSA_SIGN: (1800.0, 3400.0)},
    }
    verdicts = asymmetric_targets(rows(rates), ceil)
    by_name = {v.split(":")[0].removeprefix("- ").split(" within")[0]: v for v in verdicts}
    assert by_name[SIGN_P256].endswith("met") and "best 4,200/s at c=32" in by_name[SIGN_P256]
    assert by_name[VERIFY].endswith("met")
    rsa = by_name[SIGN_RSA]
    assert "best 910/s at c=8" in rsa and "**not met**" in rsa
    assert "C_Sign is ~556 us" in rsa and "allow ~" in rsa
    # GenerateMac: c=8 is 41% under GenerateDataKey, so not within 30% everywhere
    mac = by_name[MAC]
    assert "c=8 3,500/s vs 5,900/s (-41%)" in mac and mac.endswith("**not met**")
    rates[MAC][8] = 5000
    mac = [v for v in asymmetric_targets(rows(rates), ceil) if v.startswith(f"- {MAC}")][0]
    assert mac.endswith(": met")


def test_the_summary_reads_the_highest_concurrency():
    rates = {a.name: {1: 1000, 32: 2000} for a in ASYMMETRIC}
    rates["GenerateDataKey"] = {32: 6000}
    text = " ".join(asymmetric_summary(rows(rates), {}))
    assert text.startswith("At c=32: Sign with ECC_NIST_P256 2,000/s")
    assert "4.0x moto" in text and "GenerateDataKey in the same run 6,000/s" in text
