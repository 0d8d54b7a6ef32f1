"""Build hook: the samplerd.v1 stubs are generated from proto/ into the build folder, so the wheel (and
`pip install ./clients/python`) carries code made by protoc + grpc_python_plugin, never a hand-edited copy.
All metadata is in pyproject.toml."""
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_gen():
    # By path: importing the samplerd package would need grpcio and protobuf at build time.
    spec = importlib.util.spec_from_file_location("samplerd_gen", os.path.join(_HERE, "samplerd", "_gen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        gen = _load_gen()
        proto_dir = gen.find_proto_dir()
        if proto_dir is None:
            raise RuntimeError("samplerd: proto/ not found (expected ../../proto from clients/python, or "
                               "$SAMPLERD_PROTO_DIR)")
        for path in gen.generate(proto_dir, self.build_lib):
            self.announce(f"generated {path}", level=2)


setup(cmdclass={"build_py": BuildPyWithStubs})
