"""Faster equivalents of the totalspineseg post-processing steps that dominate a run outside the networks.

Each function here returns exactly what totalspineseg's own returns (same voxels, dtype, affine and header),
only sooner; ``tests/test_fast_paths_identical.py`` compares them on phantom label maps of every field of view
and variant ``tools/phantom.py`` makes and on randomised ones. Where an input falls outside what a fast path
was proven on, it hands the call to the original. What each mirrors (totalspineseg 20260807):

- :func:`largest_component`: ``totalspineseg.utils.largest_component.largest_component``; its dilation by
  ``iterate_structure(cross, n)`` (an 11^3 structure for ``dilate=5``) is done as n dilations by the cross.
- :func:`iterative_label`: ``totalspineseg.utils.iterative_label.iterative_label``, the same code run against
  :func:`center_of_mass` in place of ``scipy.ndimage.center_of_mass`` (half its time on the demo study) and
  :func:`merge_extra_labels_with_adjacent_vertebrae` in place of its helper of that name (per vertebra over
  the whole volume there, in the vertebra's box here).
"""
from __future__ import annotations

import types
from functools import cache, partial

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi


def center_of_mass(input, labels=None, index=None):
    """``scipy.ndimage.center_of_mass`` for a boolean ``input``, integer ``labels`` and a sequence ``index``.

    scipy sums ``input * coordinate`` over the whole volume per label with ``np.bincount``, which adds the
    weights one by one in C order. Voxels where ``input`` is False add +0.0 and change no sum, so summing
    only the True voxels, in the same order, gives the same float64 sums bit for bit, and the same
    quotients. Any other call goes to scipy.
    """
    input_array, labels_array = np.asarray(input), None if labels is None else np.asarray(labels)
    if (labels_array is None or index is None or np.isscalar(index) or input_array.dtype != bool
            or labels_array.shape != input_array.shape or not np.issubdtype(labels_array.dtype, np.integer)
            or input_array.ndim == 0):
        return ndi.center_of_mass(input, labels, index)
    flat = np.flatnonzero(input_array)
    voxel_labels = labels_array.ravel()[flat]
    if voxel_labels.size and (voxel_labels.min() < 0 or voxel_labels.max() > labels_array.size):
        return ndi.center_of_mass(input, labels, index)
    voxel_labels = voxel_labels.astype(np.intp)     # np.bincount takes no uint64
    # scipy: a label index outside the labels present sums to 0 (np.bincount's zeros, or "not found")
    wanted = np.asarray(index).astype(np.int_)
    length = max(int(voxel_labels.max()) + 1 if voxel_labels.size else 0, int(wanted.max(initial=0)) + 1)
    found = (wanted >= 0) & (wanted < length)
    picked = np.where(found, wanted, 0)

    def sums(weights: np.ndarray | None) -> np.ndarray:
        total = np.bincount(voxel_labels, weights=weights, minlength=length).astype(np.float64)[picked]
        total[~found] = 0
        return total

    # scipy's normalizer is np.bincount(labels, weights=input) of the booleans: counts as float64
    normalizer = sums(np.ones(flat.size, np.float64))
    coordinates = np.unravel_index(flat, input_array.shape)
    results = [sums(axis.astype(float)) / normalizer for axis in coordinates]
    return [tuple(v) for v in np.array(results).T]


def largest_component(seg: nib.Nifti1Image, binarize: bool = False, dilate: int = 0) -> nib.Nifti1Image:
    """``totalspineseg.utils.largest_component.largest_component``, with the same result.

    The reference dilates each mask once by ``iterate_structure(generate_binary_structure(3, 1), dilate)``,
    the L1 ball of radius ``dilate``; here it is ``dilate`` dilations by the 6-neighbour cross, which reach
    the same voxels: a voxel within L1 distance n of the mask is reached by a monotone lattice path that stays
    inside the bounding box of its two ends, hence inside the volume, so clipping each step at the border
    (scipy's border value 0) loses nothing.
    """
    seg_data = np.asanyarray(seg.dataobj).round().astype(np.uint8)
    if binarize:
        seg_data_src = seg_data.copy()
        seg_data = (seg_data != 0).astype(np.uint8)
    cross = ndi.generate_binary_structure(3, 1)
    output_seg_data = np.zeros_like(seg_data)
    for value in [v for v in np.unique(seg_data) if v != 0]:
        mask = seg_data == value
        if dilate > 0:
            mask_labeled, _ = ndi.label(ndi.binary_dilation(mask, cross, iterations=dilate), np.ones((3, 3, 3)))
            mask_labeled *= mask
        else:
            mask_labeled, _ = ndi.label(mask, np.ones((3, 3, 3)))
        label_sizes = np.bincount(mask_labeled.ravel())[1:]
        output_seg_data[mask_labeled == label_sizes.argmax() + 1] = value
    if binarize:
        output_seg_data = output_seg_data * seg_data_src
    return nib.Nifti1Image(output_seg_data, seg.affine, seg.header)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The smallest box holding ``mask``'s True voxels, grown by ``margin`` and clipped to the array."""
    boxes = ndi.find_objects(mask.astype(np.uint8))
    if not boxes:
        return None
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(boxes[0], mask.shape))


def merge_extra_labels_with_adjacent_vertebrae(seg, mask_labeled, num_labels, sorted_labels, sorted_z_indices,
                                               extra_labels, canal_centerline_indices, mask_aterior_to_canal,
                                               *, fill, sort_labels_si):
    """``totalspineseg.utils.iterative_label._merge_extra_labels_with_adjacent_vertebrae``, computed inside each
    vertebra's bounding box (grown by the one-voxel dilation) instead of over the whole volume.

    The same result: ``_fill(mask)`` is True only between a line's first and last mask voxel along some
    axis, so never outside the mask's bounding box, and inside it every line's first and last voxel are
    those of the whole line; the dilation by the cross then reaches one voxel further, which the box's
    margin holds (where the box meets the volume's edge, the volume's edge it is for both).
    ``fill`` and ``sort_labels_si`` are iterative_label's own ``_fill`` and ``_sort_labels_si``.
    """
    if num_labels == 0 or len(extra_labels) == 0:
        return mask_labeled, num_labels, sorted_labels, sorted_z_indices
    seg_data = np.asanyarray(seg.dataobj).round().astype(np.uint8)
    mask_extra = np.isin(seg_data, extra_labels)
    cross = ndi.iterate_structure(ndi.generate_binary_structure(3, 1), 1)
    for i in range(num_labels - 1, -1, -1):     # from inferior, as the reference (transverse processes)
        mask = mask_labeled == sorted_labels[i]
        box = _bounding_box(mask, margin=1)
        if box is None:                         # the reference's _fill of an empty mask is empty
            continue
        grown = ndi.binary_dilation(fill(mask[box]), cross)
        mask_labeled[box][mask_extra[box] * grown] = sorted_labels[i]
    sorted_z_indices, sorted_labels = sort_labels_si(mask_labeled, sorted_labels, canal_centerline_indices,
                                                     mask_aterior_to_canal)
    return mask_labeled, num_labels, list(sorted_labels), list(sorted_z_indices)


def _slice_extent(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per last-axis slice, the lowest and highest index along ``axis`` (0 or 1) of ``mask``'s True voxels, as
    ``np.min(np.indices(shape)[axis], where=mask, initial=int64 max, axis=(0, 1))`` and its ``np.max`` twin give
    them (an empty slice: int64 max and min), without the volume-sized index arrays."""
    present = mask.any(axis=1 - axis)                       # (n along axis, slices)
    n = present.shape[0]
    found = present.any(axis=0)
    info = np.iinfo(np.int64)
    low = np.where(found, np.argmax(present, axis=0), info.max).astype(np.int64)
    high = np.where(found, n - 1 - np.argmax(present[::-1], axis=0), info.min).astype(np.int64)
    return low, high


def _canal_mid(mask_canal: np.ndarray, axis: int) -> np.ndarray:
    """iterative_label's ``(mask_min_indices + mask_max_indices) // 2`` per slice (-1 for a slice without canal)."""
    low, high = _slice_extent(mask_canal, axis)
    return (low + high) // 2


def get_canal_centerline_indices(seg_data: np.ndarray, canal_labels=[]) -> np.ndarray:  # noqa: B006 (as the source)
    """``totalspineseg.utils.iterative_label._get_canal_centerline_indices``: the canal voxels at the middle of
    the canal's x and y extent in each slice, in ``np.nonzero``'s order; per-slice extents from projections
    instead of three volume-sized int64 index arrays (1.2 s of a whole-spine study's step 2 labelling)."""
    if not np.any(np.isin(canal_labels, seg_data)):
        raise ValueError(f"No canal found in the segmentation (canal labels: {canal_labels})")
    mask_canal = np.isin(seg_data, canal_labels)
    mid_x, mid_y = _canal_mid(mask_canal, 0), _canal_mid(mask_canal, 1)
    x = np.arange(seg_data.shape[0])[:, None, None] == mid_x[None, None, :]
    y = np.arange(seg_data.shape[1])[None, :, None] == mid_y[None, None, :]
    return np.array(np.nonzero(mask_canal * x * y)).T


def get_mask_aterior_to_canal(seg_data: np.ndarray, canal_labels=[]) -> np.ndarray:  # noqa: B006 (as the source)
    """``totalspineseg.utils.iterative_label._get_mask_aterior_to_canal``: voxels past the middle of the canal's
    y extent in their slice (every voxel of a slice without canal, as there: its middle is -1)."""
    mid_y = _canal_mid(np.isin(seg_data, canal_labels), 1)
    beyond = np.arange(seg_data.shape[1])[None, :, None] > mid_y[None, None, :]
    return np.ascontiguousarray(np.broadcast_to(beyond, seg_data.shape))


def _with_globals(module: types.ModuleType, replaced: dict) -> dict:
    """A copy of ``module``'s namespace where ``replaced`` names are swapped and every function the module
    defines is rebuilt to look its globals up in the copy: the module itself is left as it is."""
    namespace = {**vars(module), **replaced}
    for name, value in vars(module).items():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            clone = types.FunctionType(value.__code__, namespace, value.__name__, value.__defaults__,
                                       value.__closure__)
            clone.__kwdefaults__, clone.__doc__ = value.__kwdefaults__, value.__doc__
            namespace[name] = clone
    return namespace


@cache
def _fast_iterative_label():
    from spineseg.inference.nnunet_import import utility_module
    source = utility_module("iterative_label")    # without the rest of the package (nnunet_import.utilities)
    scipy_ndimage = types.ModuleType("scipy.ndimage (center_of_mass: spineseg.inference.postprocess)")
    scipy_ndimage.__dict__.update({k: v for k, v in vars(ndi).items() if not k.startswith("__")})
    scipy_ndimage.center_of_mass = center_of_mass
    namespace = _with_globals(source, {"ndi": scipy_ndimage})
    namespace["_get_canal_centerline_indices"] = get_canal_centerline_indices
    namespace["_get_mask_aterior_to_canal"] = get_mask_aterior_to_canal
    namespace["_merge_extra_labels_with_adjacent_vertebrae"] = partial(
        merge_extra_labels_with_adjacent_vertebrae, fill=namespace["_fill"], sort_labels_si=namespace["_sort_labels_si"])
    return namespace["iterative_label"]


def iterative_label(seg: nib.Nifti1Image, loc: nib.Nifti1Image | None = None, **params) -> nib.Nifti1Image:
    """``totalspineseg.iterative_label``: its own code, with :func:`center_of_mass` as its ``ndi.center_of_mass``
    and :func:`merge_extra_labels_with_adjacent_vertebrae` as its helper of that name."""
    return _fast_iterative_label()(seg, loc, **params)
