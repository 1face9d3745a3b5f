"""The benchmark's issue 14 and 15 reports: the requests it sends, the n/a cells of a peer that
lacks an operation, and the verdicts against the targets (from made-up cells: no server runs
here)."""

from __future__ import annotations

import base64
import json
import random

from bench import ceilings
from bench.load import Result
from bench.report import (
    asymmetric_summary,
    asymmetric_targets,
    is_asymmetric,
    is_post_quantum,
    post_quantum_summary,
    post_quantum_targets,
    ratio,
    rows_markdown,
)
from bench.workloads import (
    ASYMMETRIC,
    MESSAGE,
    POST_QUANTUM,
    PQ_PAIR,
    Fixture,
    Row,
    post_quantum_workloads,
    workload,
)

SIGN_P256, SIGN_RSA, VERIFY, MAC = (a.name for a in ASYMMETRIC)
MAC_SLOT = ASYMMETRIC[3].slot
SIGN_DSA, DECAPSULATE = (a.name for a in POST_QUANTUM)


def fixture() -> Fixture:
    fx = Fixture("sym", [b"{}"], signature="c2ln", ciphertext="Y3Q=")
    for a in ASYMMETRIC + POST_QUANTUM:
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


# -- post-quantum keys (issue 15) ----------------------------------------------------------------
PQ_CEIL = {
    "cores": 2,
    "generator_us": 15.0,
    "pq": {
        ceilings.PQ_PAIR: (14000.0, 28000.0),
        ceilings.PQ_SIGN: (1250.0, 2500.0),
        ceilings.PQ_SIGN_BARE: (1500.0, 3000.0),
        ceilings.PQ_DECAP: (10000.0, 20000.0),
        ceilings.PQ_DECAP_BARE: (40000.0, 80000.0),
    },
}


def test_the_post_quantum_requests():
    fx = fixture()
    sign = json.loads(workload(SIGN_DSA, fx, random.Random(1))()[1])
    assert sign == {"KeyId": "key-ML_DSA_65-SIGN_VERIFY", "Message": sign["Message"],
                    "MessageType": "RAW", "SigningAlgorithm": "ML_DSA_SHAKE_256"}  # fmt: skip
    assert base64.b64decode(sign["Message"]) == MESSAGE
    target, body = workload(DECAPSULATE, fx, random.Random(1))()
    assert target == "TrentService.Decapsulate"
    assert json.loads(body) == {
        "KeyId": "key-ML_KEM_768-ENCAPSULATE_DECAPSULATE",
        "EncapsulationAlgorithm": "ML_KEM",
        "SharedSecretCiphertextBlob": "Y3Q=",
    }
    assert post_quantum_workloads() == [SIGN_DSA, DECAPSULATE]
    # the issue 15 table: the two new cells and the ML-KEM data key pair of the main table
    assert is_post_quantum(Row(PQ_PAIR, 32, {})) and is_post_quantum(Row(DECAPSULATE, 1, {}))
    assert not is_asymmetric(Row(SIGN_DSA, 1, {})) and not is_post_quantum(Row(SIGN_RSA, 1, {}))


def test_post_quantum_targets_at_c32_against_the_in_process_rate():
    rates = {
        PQ_PAIR: {1: 1700, 8: 3600, 32: 4000},  # 29% of 14,000
        SIGN_DSA: {1: 680, 8: 1300, 32: 1600},  # 128% of 1,250
        DECAPSULATE: {1: 1650, 8: 3500, 32: 4100},  # 41% of 10,000
    }
    verdicts = post_quantum_targets(rows(rates, peer=None), PQ_CEIL)
    by_name = {v.removeprefix("- ").split(" at c=32")[0]: v for v in verdicts}
    pair, sign, decap = by_name[PQ_PAIR], by_name[SIGN_DSA], by_name[DECAPSULATE]
    assert "4,000/s = 29% of cryptography's 14,000/s" in pair and "**not met**" in pair
    assert "step in cryptography is 71 us" in pair and "allow ~" in pair
    assert (
        sign.endswith(": met")
        and "128%" in sign
        and "without the seed's expansion, 1,500/s" in sign
    )
    assert decap.endswith(": met") and "c=1 1,650, c=8 3,500, c=32 4,100" in decap
    rates[DECAPSULATE][32] = 3900
    decap = post_quantum_targets(rows(rates, peer=None), PQ_CEIL)[2]
    assert "39%" in decap and "**not met**" in decap
    # no in-process rate, no verdict
    assert post_quantum_targets(rows(rates, peer=None), {}) == []


def test_post_quantum_summary_and_the_peer_without_the_keys():
    why = "CreateKey ML_DSA_65 SIGN_VERIFY: 400 ValidationException"
    table = [
        Row(SIGN_DSA, 32, {"hsmkms": cell(1600, 1200.0)}, {"moto": why}),
        Row(PQ_PAIR, 32, {"hsmkms": cell(4000, 440.0), "moto": cell(0, 2200.0)}),
    ]
    assert ratio(table[0]) == "n/a" and "| n/a |" in rows_markdown(table)[2]
    text = " ".join(post_quantum_summary(table, PQ_CEIL))
    assert text.startswith(f"At c=32: {PQ_PAIR} 4,000/s")
    assert f"{SIGN_DSA} 1,600/s" in text and "in cryptography 800 us, 667 us of it the step" in text
    assert f"moto {SIGN_DSA}: {why}" in text and "peer failed" in text
