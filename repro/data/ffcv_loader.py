"""Two-view SSL loader on FFCV: decode once, two random resized crops + flips in FFCV's compiled
(numba) pipeline, colour augmentations per image in torch on the training device.

    loader = FFCVTwoViewLoader("data/ffcv/cifar10_train.beton", dataset="cifar10",
                               augmentations="symmetric", image_size=32, batch_size=256, seed=0)
    for views, labels in loader.epoch(epoch): ...     # the same interface as repro.data.Loader

Why a custom decoder: ffcv 1.0.2 runs one pipeline per stored field, so two views of one image
need either the image stored twice or one operation that emits both crops. `TwoRandomResizedCrops`
decodes each image once and writes both views' crops into a (n, 2, S, S, 3) uint8 batch.

Crops follow torchvision's RandomResizedCrop (same scale/ratio sampling, same fallback) and PIL's
bicubic resampling with its antialiasing support (what the torchvision path runs), rounding to
uint8 between the horizontal and the vertical pass as PIL does. The randomness is a counter-based
hash of (seed, epoch, image index, view): independent of thread scheduling, batch composition and
world size, so an epoch is a function of (seed, epoch) and a resumed run sees the same crops.
The epoch's key is read by the compiled code at every batch (a tiny object-mode block), so one
compiled pipeline serves all epochs.

Hazards of ffcv on these machines (docs/sources.md section 5) handled here: `import ffcv` sets torch's
thread count to 1 (and its Loader sets it again): restored; .beton files are written by
data_prep/ in their own process, never here; a truncated or corrupt file is refused with a
one-line error naming the file and the command that rebuilds it.
"""
from __future__ import annotations

import contextlib
import json
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

BETON_FIELDS = ("image", "label")

# The crop stage reads the epoch key in a tiny object-mode block; numba warns, once per compile
# and from ffcv's thread, that this block does not run in parallel (it does not need to).
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel execution")


# ---- files ---------------------------------------------------------------------------------------

def beton_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}.beton"


def beton_path(root: str | Path, dataset: str, split: str) -> Path:
    """The conventional location the converters write to and build_loader looks at."""
    return Path(root) / "ffcv" / beton_name(dataset, split)


def manifest_path(path: Path) -> Path:
    return Path(str(path) + ".json")


_CONVERTER = {"cifar10": "write_cifar --dataset cifar10", "cifar100": "write_cifar --dataset cifar100",
              "stl10": "write_stl10", "imagefolder": "write_imagefolder"}


def rebuild_command(dataset: str, root: str | Path, split: str | None = None) -> str:
    """The command that (re)builds a split's .beton (a damaged file is replaced, a good one kept)."""
    if dataset not in _CONVERTER:
        return f"(no FFCV converter for dataset {dataset})"
    splits = f" --splits {split}" if split else ""
    return f"python -m data_prep.{_CONVERTER[dataset]} --root {root}{splits}"


@contextlib.contextmanager
def keep_torch_threads():
    """ffcv sets torch's intra-op thread count as a side effect (import, Loader, each epoch)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def import_ffcv():
    with keep_torch_threads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ffcv  # noqa: F401
        import ffcv.loader  # noqa: F401
    return ffcv


def inspect_beton(path: str | Path, rebuild: str = "") -> dict:
    """Check a .beton's structure without trusting it; return {'num_samples', 'fields', 'labels'}.

    Catches truncation (the allocation table or a sample's data past the end of the file), a
    garbled header or metadata, and a manifest (written by data_prep) that disagrees with the file.
    Cannot see flipped bits inside pixel data (no checksum over the data: too slow for ImageNet).
    """
    path = Path(path)
    hint = f": rebuild it with `{rebuild}`" if rebuild else ""

    def corrupt(reason: str) -> UserError:
        return UserError(f"'{path}' is truncated or corrupt ({reason}){hint}")

    if not path.is_file():
        raise UserError(f"'{path}' not found{hint.replace('rebuild', 'build')}")
    import_ffcv()
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType, get_handlers, \
        get_metadata_type
    from ffcv.utils import decode_null_terminated_string

    size = path.stat().st_size
    if size < HeaderType.itemsize:
        raise corrupt(f"{size} bytes, shorter than the header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if header["version"] != CURRENT_VERSION:
        raise corrupt(f"format version {header['version']}, expected {CURRENT_VERSION}")
    num_samples, num_fields = int(header["num_samples"]), int(header["num_fields"])
    page_size, table_at = int(header["page_size"]), int(header["alloc_table_ptr"])
    if not 0 < num_fields <= 16 or page_size <= 0 or page_size & (page_size - 1):
        raise corrupt(f"garbled header: {num_fields} fields, page size {page_size}")
    descriptors_at = HeaderType.itemsize
    metadata_at = descriptors_at + num_fields * FieldDescType.itemsize
    if metadata_at > size:
        raise corrupt("ends inside the field descriptors")
    descriptors = np.fromfile(path, dtype=FieldDescType, count=num_fields, offset=descriptors_at)
    try:
        handlers = get_handlers(descriptors)
    except (KeyError, ValueError) as err:
        raise corrupt(f"unknown field type ({err})") from None
    names = [decode_null_terminated_string(d["name"]) for d in descriptors]
    if tuple(names) != BETON_FIELDS:
        raise corrupt(f"fields {names}, expected {list(BETON_FIELDS)}")
    metadata_type = get_metadata_type(handlers)
    data_at = metadata_at + num_samples * metadata_type.itemsize
    if not data_at <= table_at <= size:
        raise corrupt(f"allocation table at byte {table_at}, file has {size} (data region from {data_at})")
    if (size - table_at) % ALLOC_TABLE_TYPE.itemsize:
        raise corrupt("the allocation table is cut short")
    metadata = np.fromfile(path, dtype=metadata_type, count=num_samples, offset=metadata_at)
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table_at)
    images, labels = metadata["f0"], metadata["f1"]
    if len(table) != num_samples:
        raise corrupt(f"{len(table)} allocations for {num_samples} samples")
    if num_samples:
        ends = table["ptr"] + table["size"]
        if table["ptr"].min() < data_at or ends.max() > table_at:
            raise corrupt("sample data outside the data region")
        if not np.isin(images["data_ptr"], table["ptr"]).all():
            raise corrupt("an image points at no allocation")
        if images["mode"].max() > 1 or images["width"].min() == 0 or images["height"].min() == 0:
            raise corrupt("garbled image metadata")
    manifest_file = manifest_path(path)
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text())
        except json.JSONDecodeError:
            raise corrupt(f"unreadable manifest '{manifest_file}'") from None
        if manifest.get("bytes") != size or manifest.get("num_samples") != num_samples:
            raise corrupt(f"{size} bytes / {num_samples} samples, its manifest says "
                          f"{manifest.get('bytes')} / {manifest.get('num_samples')}")
    return {"num_samples": num_samples, "labels": np.asarray(labels).copy(),
            "max_height": int(images["height"].max()) if num_samples else 0,
            "max_width": int(images["width"].max()) if num_samples else 0}


# ---- the compiled crop stage -----------------------------------------------------------------------

class EpochKey:
    """The current epoch's random key, read by the compiled crop stage at every batch."""

    def __init__(self):
        self.value = 0

    def read(self) -> np.uint64:
        return np.uint64(self.value)


def stream_seed(*words: int) -> int:
    """A 64-bit seed from integers (numpy's SeedSequence hashing): distinct streams per purpose."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0])


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
        (n, views, size, size, 3) uint8. views: per view (scale_low, scale_high, flip_prob)."""

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


# ---- order and sharding ------------------------------------------------------------------------------

def epoch_batches(num_samples: int, *, seed: int, epoch: int, shuffle: bool, drop_last: bool,
                  batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> list[np.ndarray]:
    """This rank's positions (0..num_samples-1), batch by batch, from global batch `start_batch`.

    The same order as repro.data.Loader.batches (torch.randperm seeded by epoch_seed), so the FFCV
    and torchvision paths see the same images in the same batches; with world_size > 1 each rank
    takes its slice of every global batch of `batch_size`.
    """
    from repro.data import epoch_seed

    if shuffle:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    else:
        order = torch.arange(num_samples)
    order = order.numpy()
    per_rank = batch_size // world_size
    count = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
    batches = []
    for b in range(start_batch, count):
        batch = order[b * batch_size:(b + 1) * batch_size]
        batches.append(batch[rank * per_rank:(rank + 1) * per_rank] if world_size > 1 else batch)
    return batches


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

    batch_size is the global batch; with world_size > 1 each rank gets its slice of every global
    batch (as Loader). indices: the file's samples to use (build_dataset's subset). Every view of
    an image is a function of (seed, epoch, image index, view) alone: the same whatever the rank,
    world size, batch or resume point. device: where colour augmentation runs and the views land
    (the training device). augment_threads: torch threads for colour augmentation on CPU (None:
    leave as is).
    """

    def __init__(self, path: str | Path, *, dataset: str, augmentations: str, image_size: int,
                 batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = -1, indices=None, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", rebuild: str = "", batches_ahead: int = 3,
                 augment_threads: int | None = 1):
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.path = Path(path)
        info = inspect_beton(self.path, rebuild)
        ffcv = import_ffcv()
        from ffcv.fields.basics import IntDecoder

        indices = np.arange(info["num_samples"]) if indices is None else np.asarray(indices, dtype=np.int64)
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
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

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
        and torch's OpenMP threads wait on each other when one of them has no core (measured on 2
        cores: 0.5 batches/s with 2 threads, 27 with 1)."""
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
                         batch_size: int, subset: int, pin_memory: bool, rank: int, world_size: int,
                         image_size: int) -> FFCVTwoViewLoader | None:
    """The FFCV loader when `data.loader` allows it and `<root>/ffcv/<dataset>_<split>.beton`
    exists, else None (the caller uses the torchvision path). Prints the one line that says which.

    The training device is not passed to build_loader; the trainer asks for pinned memory exactly
    when it trains on CUDA, so colour augmentation runs on the current CUDA device then, else on CPU.
    """
    path = beton_path(data_cfg.root, data_cfg.dataset, split)
    command = rebuild_command(data_cfg.dataset, data_cfg.root, split)
    mode = getattr(data_cfg, "loader", "auto")

    def log(message: str) -> None:
        print(f"data: {message}", file=sys.stderr)

    if mode == "torchvision":
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (data.loader=torchvision)")
        return None
    if data_cfg.dataset not in _CONVERTER:
        if mode == "ffcv":
            raise UserError(f"data.loader=ffcv but there is no FFCV converter for dataset {data_cfg.dataset}: "
                            f"use data.loader=auto or torchvision")
        log(f"torchvision two-view loader for {data_cfg.dataset} {split} (no FFCV converter for this dataset)")
        return None
    if not path.is_file():
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
    from repro.data import default_workers

    device = torch.device("cuda", torch.cuda.current_device()) if pin_memory and torch.cuda.is_available() \
        else torch.device("cpu")
    info_count = inspect_beton(path, command)["num_samples"]
    indices = subset_positions(info_count, subset)
    loader = FFCVTwoViewLoader(path, dataset=data_cfg.dataset, augmentations=data_cfg.augmentations,
                               image_size=image_size, batch_size=batch_size, seed=seed, shuffle=shuffle,
                               drop_last=drop_last, num_workers=default_workers(data_cfg.num_workers),
                               indices=indices, rank=rank, world_size=world_size, device=device,
                               rebuild=command)
    log(f"FFCV two-view loader for {data_cfg.dataset} {split}: {path} ({len(indices):,} images, "
        f"augmentation on {device})")
    return loader


def subset_positions(count: int, subset: int) -> np.ndarray:
    """build_dataset's subset rule (randperm seeded 0, first `subset`, sorted): the same images."""
    if not subset or subset >= count:
        return np.arange(count)
    generator = torch.Generator().manual_seed(0)
    return torch.randperm(count, generator=generator)[:subset].sort().values.numpy()
