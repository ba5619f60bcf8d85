"""The library's emulator over TLS, for the benchmark's https runs.

    python benchmarks/tls_emulator.py --cert CERT.pem --cert-key KEY.pem \\
        [--host 127.0.0.1] [--port 8443] [--key API_KEY ...] [--latency SECONDS]

``bulk-secrets emulator`` has no TLS flag; this starts the same emulator
(``bulk_secrets.emulator.running_emulator``) with an ``ssl.SSLContext`` that serves ``CERT``,
on the event loop the CLI would pick (``bulk_secrets.provision.run_blocking``, so
``BULK_SECRETS_LOOP`` counts here too). Once it listens it prints the line the CLI prints,
``bulk-secrets: emulator listening on https://HOST:PORT ...``, on stderr, so that
``processes.py`` waits for it in the same way. SIGINT (Ctrl-C) stops it, exit code 0.

The certificate must name the URL's host: for ``https://127.0.0.1`` an ``IP:127.0.0.1``
subjectAltName (``processes.make_certificate`` makes one).
"""

from __future__ import annotations

import argparse
import ssl
import sys

import anyio

from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.provision import run_blocking


async def serve(config: EmulatorConfig, host: str, port: int, tls: ssl.SSLContext) -> None:
    async with running_emulator(config, host=host, port=port, tls=tls) as emulator:
        print(
            f"bulk-secrets: emulator listening on {emulator.base_url} "
            f"(keys: {len(config.keys)}, TLS); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        await anyio.sleep_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description="the bulk-secrets emulator, over TLS")
    parser.add_argument("--cert", required=True, help="the certificate (PEM) to serve")
    parser.add_argument("--cert-key", required=True, help="its private key (PEM)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0: any free one")
    parser.add_argument("--key", action="append", help="an API key it accepts (repeatable)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    args = parser.parse_args()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.cert_key)
    keys: dict[str, frozenset[str] | None] = dict.fromkeys(args.key or ["sandbox-key"])
    config = EmulatorConfig(keys=keys, faults=Faults(latency=args.latency))
    try:
        run_blocking(lambda: serve(config, args.host, args.port, tls))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:  # the address is taken, or not this machine's
        print(f"bulk-secrets: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
