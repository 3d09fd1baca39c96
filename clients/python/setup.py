"""Generates the gRPC stubs from the repository's protos while building.

The protos live in ../../proto (or $FACTCHECK_PROTO_DIR); grpcio-tools
brings protoc and the well-known types. The generated modules go to
factcheck/v1/ in the build tree only.
"""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent


class BuildWithStubs(build_py):
    def run(self):
        from grpc_tools import protoc
        import grpc_tools

        proto_dir = pathlib.Path(os.environ.get("FACTCHECK_PROTO_DIR", HERE.parent.parent / "proto"))
        source = proto_dir / "factcheck" / "v1" / "factcheck.proto"
        if not source.exists():
            raise SystemExit(f"cannot find {source}: set FACTCHECK_PROTO_DIR to the repository's proto/ directory")
        well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        out = HERE
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_dir}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                str(source),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {source} ({code})")
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
