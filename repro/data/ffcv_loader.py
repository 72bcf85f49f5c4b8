"""Two-view SSL loader on FFCV: decode once, two random resized crops + flips in FFCV's compiled
(numba) pipeline, colour augmentations per image in torch on the training device.

    loader = FFCVTwoViewLoader("runs/cache/ffcv/cifar10_train.beton", dataset="cifar10",
                               augmentations="symmetric", image_size=32, batch_size=256, seed=0)
    for views, labels in loader.epoch(epoch): ...     # the same interface as repro.data.Loader

Crops follow torchvision's RandomResizedCrop and PIL's bicubic resampling (`TwoRandomResizedCrops`);
the randomness is a counter-based hash of (seed, epoch, image index, view), so an epoch is a
function of (seed, epoch) whatever the threads, batches or world size, and a resumed run sees the
same crops. Hazards of ffcv on these machines (docs/sources.md section 5) handled here: ffcv's
Loader sets torch's thread count (as its import does): restored; .beton files are written by
data_prep/ in their own process, never here; a truncated or corrupt file is refused with a
one-line error naming the file and the command that rebuilds it (repro/formats/beton.py).
"""
from __future__ import annotations

import contextlib
import queue
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from repro.cli import UserError
from repro.data.augment import AUGMENTATION_SETS, mean_std
from repro.data.gpu_augment import NUM_DRAWS, BatchAugment
from repro.formats.beton import beton_path, find_beton, import_ffcv, inspect_beton, keep_torch_threads, rebuild_command
from repro.formats.catalog import dataset_record
from repro.formats.order import batch_count, check_sharding, epoch_batches, subset_positions
from repro.seeds import stream_seed

# The crop stage reads the epoch key in a tiny object-mode block; numba warns, once per compile
# and from ffcv's thread, that this block does not run in parallel (it does not need to).
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel execution")


# ---- the compiled crop stage -----------------------------------------------------------------------

class EpochKey:
    """The current epoch's random key, read by the compiled crop stage at every batch."""

    def __init__(self):
        self.value = 0

    def read(self) -> np.uint64:
        return np.uint64(self.value)


_CROPS, _COLOUR = 1, 2  # stream purposes


def _two_crops_decoder_class():
    """Defined lazily: its base class comes from ffcv."""
    import_ffcv()
    from ffcv.fields.rgb_image import IMAGE_MODES, SimpleRGBImageDecoder
    from ffcv.libffcv import imdecode
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler

    class TwoRandomResizedCrops(SimpleRGBImageDecoder):
        """Decode each image once (JPEG or raw) and write one random resized crop per view,
        (n, views, size, size, 3) uint8. views: per view (scale_low, scale_high, flip_prob).

        Why: ffcv 1.0.2 runs one pipeline per stored field, so two views of one image need either
        the image stored twice or one operation that emits both crops. The crops follow
        torchvision's RandomResizedCrop (same scale/ratio sampling, same fallback) and PIL's bicubic
        resampling with its antialiasing support (what the torchvision path runs), rounding to uint8
        between the horizontal and the vertical pass as PIL does. The epoch's key is read by the
        compiled code at every batch (a tiny object-mode block), so one compiled pipeline serves
        all epochs."""

        def __init__(self, size: int, views: list[tuple[float, float, float]], epoch_key: EpochKey,
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)):
            super().__init__()
            self.size = size
            self.views = np.array(views, dtype=np.float64)
            self.log_ratio = np.log(np.array(ratio, dtype=np.float64))
            self.epoch_key = epoch_key

        def declare_state_and_memory(self, previous_state):
            max_height, max_width = int(self.metadata["height"].max()), int(self.metadata["width"].max())
            shape = (len(self.views), self.size, self.size, 3)
            dtype = np.dtype("<u1")
            return (replace(previous_state, jit_mode=True, shape=shape, dtype=dtype),
                    (AllocationQuery(shape, dtype), AllocationQuery((max_height * max_width * 3,), dtype)))

        def generate_code(self):
            from numba import objmode

            from repro.data._ffcv_kernels import crop_views  # numba loads only where FFCV is used

            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            imdecode_c = Compiler.compile(imdecode)
            jpg = IMAGE_MODES["jpg"]
            views, log_ratio = self.views, self.log_ratio
            read_key = self.epoch_key.read

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, scratch = my_storage
                with objmode(epoch_key="uint64"):
                    epoch_key = read_key()
                for i in my_range(len(batch_indices)):
                    index = batch_indices[i]
                    field = metadata[index]
                    data = mem_read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    if field["mode"] == jpg:
                        buffer = scratch[i]
                        imdecode_c(data, buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                        image = buffer[:np.uint64(3) * height * width].reshape(height, width, 3)
                    else:
                        image = data.reshape(height, width, 3)
                    crop_views(image, epoch_key, np.uint64(index), views, log_ratio, destination[i])
                return destination[:len(batch_indices)]

            decode.is_parallel = True
            return decode

    return TwoRandomResizedCrops


# ---- ffcv's traversal order -------------------------------------------------------------------------

def _fixed_order_class():
    import_ffcv()
    from ffcv.traversal_order.base import TraversalOrder

    class FixedOrder(TraversalOrder):
        """An ffcv traversal order that returns whatever order it was last given (the loader sets
        it before each epoch). ffcv 1.0.2 binds an order passed as an instance by calling it with
        the loader (`order(loader)`)."""

        def __init__(self):  # no loader yet: see __call__
            self.order = None

        def __call__(self, loader):
            self.loader, self.indices, self.seed = loader, np.asarray(loader.indices), loader.seed
            self.distributed, self.sampler = False, None
            if self.order is None:
                self.order = self.indices
            return self

        def sample_order(self, epoch: int):
            return self.order

    return FixedOrder


def sample_uniforms(key: int, indices: np.ndarray, view: int, count: int) -> np.ndarray:
    """(n, count) U[0, 1) numbers for one view of the images `indices`: the same counter-based
    hash as the compiled crop stage (_ffcv_kernels.uniform(sample_key(key, index, view), i)),
    vectorised in numpy (uint64 arithmetic wraps)."""
    def mix64(z):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    indices = np.asarray(indices, dtype=np.uint64)
    sample = mix64(np.uint64(key) + mix64(indices * np.uint64(8) + np.uint64(view) + np.uint64(1)))
    counters = (np.arange(count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    bits = mix64(sample[:, None] + counters[None, :]) >> np.uint64(11)
    return bits.astype(np.float64) / 9007199254740992.0


def _stop(iterator) -> None:
    """End ffcv's prefetching thread before another epoch starts (epochs left early included).

    ffcv 1.0.2's EpochIterator keeps computing batches while its queue has room and ends with a
    blocking put of None: after close() alone, join() waits forever on a full queue. So: no batch
    after the one in progress, then drain the queue until the thread is gone.
    """
    iterator.iter_ixes = iter(())
    iterator.close()
    while iterator.is_alive():
        try:
            iterator.output_queue.get(timeout=0.05)
        except queue.Empty:
            pass
    iterator.join()


# ---- the loader ----------------------------------------------------------------------------------------

class BetonSplit:
    """What the trainer reads from `loader.dataset`: its length, the images of the split."""

    def __init__(self, path: Path, indices: np.ndarray, labels: np.ndarray):
        self.path, self.indices, self.labels = path, indices, labels

    def __len__(self) -> int:
        return len(self.indices)


class FFCVTwoViewLoader:
    """Two augmented views per image from a .beton, with repro.data.Loader's interface and batches.

    batch_size is the global batch, sharded over ranks as Loader's (repro.formats.order). The
    file's samples used: `indices` if given, else the fixed subset of `subset` images (0: all), the
    images build_dataset's subset keeps. Every view of an image is a function of (seed, epoch,
    image index, view) alone: the same whatever the rank, world size, batch or resume point.
    device: where colour augmentation runs and the views land (the training device).
    augment_threads: torch threads for colour augmentation on CPU (None: leave as is).
    """

    def __init__(self, path: str | Path, *, dataset: str, augmentations: str, image_size: int,
                 batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = -1, indices=None, subset: int = 0, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", rebuild: str = "", batches_ahead: int = 3,
                 augment_threads: int | None = 1):
        check_sharding(batch_size, rank, world_size)
        self.path = Path(path)
        info = inspect_beton(self.path, rebuild)
        ffcv = import_ffcv()
        from ffcv.fields.basics import IntDecoder

        indices = subset_positions(info["num_samples"], subset) if indices is None \
            else np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= info["num_samples"]):
            raise ValueError(f"indices outside the {info['num_samples']} samples of {self.path}")
        self.dataset = BetonSplit(self.path, indices, info["labels"][indices])
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.device = torch.device(device)
        self.augment_threads = augment_threads
        views = AUGMENTATION_SETS[augmentations]
        self._augment = [BatchAugment(view, *mean_std(dataset)) for view in views]
        self._epoch_key = EpochKey()
        decoder = _two_crops_decoder_class()(
            image_size, [(v.crop_scale[0], v.crop_scale[1], v.flip_prob) for v in views], self._epoch_key)
        self._order = _fixed_order_class()()
        with keep_torch_threads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._loader = ffcv.loader.Loader(
                str(self.path), batch_size=batch_size // world_size, num_workers=num_workers,
                order=self._order, seed=seed, drop_last=False, batches_ahead=batches_ahead,
                pipelines={"image": [decoder], "label": [IntDecoder()]})

    def __len__(self) -> int:
        """Global batches per epoch (as Loader)."""
        return batch_count(len(self.dataset), self.batch_size, self.drop_last)

    def batches(self, epoch: int, start_batch: int = 0) -> list[np.ndarray]:
        """This rank's file indices, batch by batch, from global batch `start_batch` on."""
        positions = epoch_batches(len(self.dataset), seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                                  drop_last=self.drop_last, batch_size=self.batch_size, rank=self.rank,
                                  world_size=self.world_size, start_batch=start_batch)
        return [self.dataset.indices[p] for p in positions]

    def crops(self, epoch: int, start_batch: int = 0):
        """The compiled stage's output: (uint8 (n, 2, S, S, 3) crops, labels (n, 1), file indices)
        per batch, before colour augmentation. The arrays are reused by later batches: copy to keep."""
        batches = [b for b in self.batches(epoch, start_batch) if len(b)]
        if not batches:
            return
        self._order.order = np.concatenate(batches).astype(np.uint64)
        self._epoch_key.value = stream_seed(self.seed, epoch, _CROPS)
        with keep_torch_threads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba: "object mode won't allow parallel execution"
            iterator = iter(self._loader)
        try:
            for (crops, labels), indices in zip(iterator, batches):
                if len(labels) != len(indices):
                    raise RuntimeError(f"ffcv returned a batch of {len(labels)}, expected {len(indices)}")
                yield crops, labels, indices
        finally:
            _stop(iterator)

    def epoch(self, epoch: int, start_batch: int = 0):
        """Batches of epoch `epoch` (from global batch `start_batch`, to resume mid-epoch):
        ([view1, view2] float (n, 3, S, S) normalised, labels)."""
        colour_key = stream_seed(self.seed, epoch, _COLOUR)
        for crops, labels, indices in self.crops(epoch, start_batch):
            # a blocking copy: the crops' buffer is reused by the prefetching thread
            crops = torch.from_numpy(crops).to(self.device)
            with self._augment_threads():
                views = [augment(crops[:, v], torch.from_numpy(sample_uniforms(colour_key, indices, v, NUM_DRAWS)))
                         for v, augment in enumerate(self._augment)]
            yield views, torch.from_numpy(labels).view(-1).to(self.device, copy=True)

    @contextlib.contextmanager
    def _augment_threads(self):
        """On CPU, colour augmentation runs on one torch thread: the crop stage keeps a core busy,
        and torch's OpenMP threads wait on each other when one of them has no core (the measurement:
        docs/data.md, "Colour stage")."""
        if self.device.type != "cpu" or self.augment_threads is None:
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(self.augment_threads)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


# ---- the entry point's FFCV branch (repro.data.build_loader) -----------------------------------------

def two_view_ffcv_loader(data_cfg, *, split: str, shuffle: bool, drop_last: bool, seed: int,
                         batch_size: int, subset: int, device: torch.device, rank: int, world_size: int,
                         image_size: int) -> FFCVTwoViewLoader | None:
    """The FFCV loader when `data.loader` allows it and `<dataset>_<split>.beton` exists in
    `<data.cache_dir>/ffcv/` or `<root>/ffcv/` (that order), else None (the caller uses the
    torchvision path). Prints the one line that says which. Colour augmentation runs on `device`,
    the training device (on CUDA without an index: the current CUDA device)."""
    cache_dir = getattr(data_cfg, "cache_dir", "")
    found = find_beton(data_cfg.root, data_cfg.dataset, split, cache_dir)
    path = found or beton_path(data_cfg.root, data_cfg.dataset, split, cache_dir)  # where it would be built
    command = rebuild_command(data_cfg.dataset, data_cfg.root, split, cache_dir)
    mode = getattr(data_cfg, "loader", "auto")

    def log(message: str) -> None:
        print(f"data: {message}", file=sys.stderr)

    if mode == "torchvision":
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (data.loader=torchvision)")
        return None
    if not dataset_record(data_cfg.dataset).has_converter:
        if mode == "ffcv":
            raise UserError(f"data.loader=ffcv but there is no FFCV converter for dataset {data_cfg.dataset}: "
                            f"use data.loader=auto or torchvision")
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (no FFCV converter for this dataset)")
        return None
    if found is None:
        if mode == "ffcv":
            raise UserError(f"data.loader=ffcv but '{path}' does not exist: build it with `{command}`")
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (no {path}; `{command}` builds it)")
        return None
    try:
        import_ffcv()
    except ImportError as err:
        if mode == "ffcv":
            raise UserError(f"data.loader=ffcv but ffcv does not import ({err}): run `make setup`") from None
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (ffcv does not import: {err})")
        return None
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    loader = FFCVTwoViewLoader(path, dataset=data_cfg.dataset, augmentations=data_cfg.augmentations,
                               image_size=image_size, batch_size=batch_size, seed=seed, shuffle=shuffle,
                               drop_last=drop_last, num_workers=data_cfg.workers(),
                               subset=subset, rank=rank, world_size=world_size, device=device,
                               rebuild=command)
    log(f"FFCV two-view loader for {data_cfg.dataset} {split}: {path} ({len(loader.dataset):,} images, "
        f"augmentation on {device})")
    return loader

