"""DKIM benchmark: CPU microseconds per message to render one recipient's mail, unsigned and signed,
side by side in one process, on the largest TinyLab post of the corpus (or the bundled example).

    .venv/bin/python bench/signing.py                  # 2,000 messages per row, 5 rounds
    .venv/bin/python bench/signing.py --count 5000 --rounds 7 --issue more/issue.md

Rows: the unsigned render (`MessageTemplate.render`), the same signed with RSA-2048, with RSA-2048
and Ed25519, and, for scale, dkimpy's own `dkim.sign()` of the unsigned message (what signing with
the library as it is would cost). Rounds alternate the rows so drift on a noisy machine hits each
alike; the median round is shown. Figures are process CPU time (time.process_time), not wall time.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from distributor.channel import Recipient
from distributor.channels.mail.dkim import DkimKey, DkimSigner
from distributor.channels.mail.message import MessageTemplate
from distributor.registry import channels
from distributor.render.renditions import render_issue
from distributor.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def pick_issue(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    posts = sorted((CORPUS / "tinylab").glob("*.md"), key=lambda path: path.stat().st_size)
    return posts[-1] if posts else next((REPO / "distributor" / "examples").glob("*.md"))


def templates(issue_path: Path) -> tuple[dict[str, MessageTemplate], bytes, rsa.RSAPrivateKey]:
    settings = Settings()
    renditions = render_issue(issue_path, settings, channels=("email", "text"))
    parts = channels()["email"].message_parts(renditions["email"], renditions.issue)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.timezone.utc)
    rsa_only = DkimSigner("example.org", [DkimKey("s1", "rsa-sha256", rsa_key)])
    both = DkimSigner("example.org", [DkimKey("s1", "rsa-sha256", rsa_key), DkimKey("e1", "ed25519-sha256", ed_key)])
    made = {
        "unsigned": MessageTemplate(parts, settings.channels.email, date=now),
        "rsa-2048": MessageTemplate(parts, settings.channels.email, date=now, signer=rsa_only),
        "rsa-2048 + ed25519": MessageTemplate(parts, settings.channels.email, date=now, signer=both),
    }
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return made, pem, rsa_key


def per_message(render: Callable[[int], bytes], count: int) -> float:
    """CPU microseconds per call of `render(i)` over `count` calls."""
    started = time.process_time()
    for i in range(count):
        render(i)
    return 1e6 * (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per row and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, rows alternating (default 5)")
    parser.add_argument("--issue", type=Path, help="issue to render (default: largest TinyLab post)")
    args = parser.parse_args()
    issue = pick_issue(args.issue)
    made, pem, _ = templates(issue)

    def recipient(i: int) -> Recipient:
        return Recipient(f"user{i:05d}@example.net", f"User {i}", f"s{i}")

    rows: dict[str, Callable[[int], bytes]] = {
        name: (lambda i, template=template: template.render(recipient(i), f"https://example.org/u/{i}"))
        for name, template in made.items()}
    unsigned = made["unsigned"]
    rows["dkim.sign() (dkimpy alone)"] = lambda i: dkim.sign(
        unsigned.render(recipient(i), f"https://example.org/u/{i}"), b"s1", b"example.org", pem,
        canonicalize=(b"relaxed", b"simple"))
    sizes = len(unsigned.render(recipient(0), "https://example.org/u/0"))
    print(f"# issue={issue.name}  message={sizes:,} B  count={args.count:,} x {args.rounds} rounds")
    results: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, render in rows.items():
            # dkimpy alone is some thirty times slower: a tenth of the count keeps the run short
            count = max(args.count // 10, 1) if name.startswith("dkim.sign") else args.count
            results[name].append(per_message(render, count))
    base = statistics.median(results["unsigned"])
    print(f"{'variant':<30} {'cpu_us/msg':>10} {'min':>8} {'x unsigned':>10} {'+us':>8}")
    for name, figures in results.items():
        median = statistics.median(figures)
        print(f"{name:<30} {median:>10.0f} {min(figures):>8.0f} {median / base:>10.2f} {median - base:>8.0f}")


if __name__ == "__main__":
    main()
