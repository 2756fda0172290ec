"""``python -m normapps.demo [--host 127.0.0.1] [--port 7860] [--ckpt <checkpoint>]``.

Serves the style-transfer page on this machine only (127.0.0.1) unless another host is given,
with the packaged weights (no network), or with a checkpoint of this project (AdaIN, CIN or
arbitrary CIN; the other methods keep their packaged weights).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normapps.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--ckpt", default=None, help="a style-transfer checkpoint of this project")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto",
                        help="auto (AdaIN: int8 on CPUs with VNNI; else bf16 where native, else fp32) | fp32 | bf16 | fp16 | int8")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port")
    if args.ckpt and not os.path.isfile(args.ckpt):
        parser.error(f"--ckpt {args.ckpt}: no such file")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("the demo needs Gradio: pip install 'normapps[demo]'", file=sys.stderr)
        return 2
    from normapps.demo.app import build_app
    from normapps.demo.service import StyleService

    service = StyleService(ckpt=args.ckpt, device=args.device, precision=args.precision)
    demo = build_app(service)
    print(f"normapps demo on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                inbrowser=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
