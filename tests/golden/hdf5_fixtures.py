"""HDF5 files that Keras' loader refuses, written by h5py, for src/hdf5.rs's tests.

    /tmp/keras-ref-venv/bin/python tests/golden/hdf5_fixtures.py
"""
import os
import h5py
import numpy as np

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hdf5")
os.makedirs(D, exist_ok=True)
with h5py.File(os.path.join(D, "links.h5"), "w") as f:
    f.create_dataset("real", data=np.arange(4, dtype="float32"))
    f["soft"] = h5py.SoftLink("/real")
with h5py.File(os.path.join(D, "external_link.h5"), "w") as f:
    f["ext"] = h5py.ExternalLink("other.h5", "/x")
with h5py.File(os.path.join(D, "external_dataset.h5"), "w") as f:
    f.create_dataset("e", shape=(4,), dtype="float32", external=[("raw.bin", 0, 16)])
with h5py.File(os.path.join(D, "virtual.h5"), "w") as f:
    f.create_dataset("src", data=np.arange(4, dtype="float32"))
    lay = h5py.VirtualLayout(shape=(4,), dtype="float32")
    lay[:] = h5py.VirtualSource(f["src"])
    f.create_virtual_dataset("v", lay)
with h5py.File(os.path.join(D, "bomb.h5"), "w") as f:
    f.create_dataset("b", shape=(100000, 100000), dtype="float32", chunks=(1000, 1000), compression="gzip")
with h5py.File(os.path.join(D, "misc.h5"), "w", libver="latest") as f:
    f.create_dataset("chunked", data=np.arange(1000, dtype="float32").reshape(10, 100), chunks=(3, 7),
                     compression="gzip")
    f.create_dataset("scalar", data=np.int64(7))
    f.attrs["names"] = ["a", "bc"]
