"""Build hooks: the samplerd.v1 stubs are generated from proto/ by protoc + grpc_python_plugin into the sdist
(`sdist`) and the wheel (`build_py`), so both carry code made from the .proto files, never a hand-edited copy.
Building from the sdist (no proto/ beside it) uses the stubs it carries. All metadata is in pyproject.toml."""
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_gen():
    # By path: importing the samplerd package would need grpcio and protobuf at build time.
    spec = importlib.util.spec_from_file_location("samplerd_gen", os.path.join(_HERE, "samplerd", "_gen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _generate(command, out_dir):
    """Generates the stubs under `out_dir` from proto/ when there is one; else the tree must already carry them."""
    gen = _load_gen()
    proto_dir = gen.find_proto_dir()
    if proto_dir is None:
        if not gen.stubs_present(_HERE):
            raise RuntimeError(
                "samplerd: neither proto/ (../../proto from clients/python, or $SAMPLERD_PROTO_DIR) "
                "nor generated stubs in samplerd/v1 were found"
            )
        return
    for path in gen.generate(proto_dir, out_dir):
        command.announce(f"generated {path}", level=2)


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        _generate(self, self.build_lib)


class SdistWithStubs(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        _generate(self, base_dir)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithStubs})
