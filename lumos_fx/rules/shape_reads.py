"""Reads of a tensor's shape: x.shape, x.size(d), x.dim(), x.dtype."""

from __future__ import annotations

import builtins
import operator

import torch
from torch import fx
from torch.fx._symbolic_trace import _assert_is_none
from torch.fx.node import map_arg

from .api import (EMPTY, LIVE, Connecting, Outcome, PruneError, Pruning, Rule, arg, describe, normalize_dim, run_on,
    METADATA_READS, check_read_counts, dims_indexed, set_arg, shape_of, shape_query, size_read, target_name, tensor_meta)
from .dims import PRIMES, Rearrange
from .reshape import preserved_dim, target_shape
from .registry import REGISTRY


class ShapeRead(Rule):
    """Reads of a tensor's shape: ``x.shape``, ``x.size()``, ``x.size(d)``, ``x.dim()``,
    ``x.dtype`` ... Reading a non-channel size is fine; reading the channel count (whose
    value pruning changes) keeps the channels, unless it is only ever the target size of a
    view, reshape or expand (``x.view(-1, x.size(-1))``), whose rule ties it to the channels it
    sizes or refuses it, or it is a model input's feature count that is only ever checked
    (``if x.shape[1] != self.in_channels: raise``, a guard of the trace): the pruned model
    still takes every feature, so the check reads the count the input had."""


    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        what = shape_query(node)
        if what in METADATA_READS:
            an.accept(src)
        elif what == "size" and len(node.args) + len(node.kwargs) > 1:
            self._read_dims(an, src, node, [arg(node, 1, "dim")], len(an.shape(x)))
        elif what in ("size", "shape"):
            self._read_shape_value(an, src, node)
        else:
            an.block(src, f"its channel count is read by {an.describe(node)}")

    def _read_dims(self, an: Connecting, src, node: fx.Node, dims, ndim: int) -> None:
        if not node.users:  # read and never used (neuraloperator's size = list(x.shape) on 1-D data)
            an.accept(src)
        elif any(not isinstance(d, int) for d in dims):
            an.block(src, f"its channel count is read by {an.describe(node)}")
        elif src.dim in [normalize_dim(d, ndim) for d in dims] and not (_only_sizes(node) or _input_checked(node)):
            an.block(src, f"its channel count is read by {an.describe(node)}")
        else:
            an.accept(src)

    def _read_shape_value(self, an: Connecting, src, node: fx.Node) -> None:
        ndim = len(an.shape(node.args[0]))
        for user in node.users:
            dims = dims_indexed(user, ndim)
            if dims is not None:
                self._read_dims(an, src, user, dims, ndim)
            else:
                an.block(src, f"its whole shape is used by {an.describe(user)}")
            an.claim(user)
        an.accept(src)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        """A cut tensor's sizes are read off a live one with the same sizes on the dims read,
        found through the permutes, transposes and reshapes that made the cut tensor if need
        be, or dim by dim off several."""
        x = node.args[0]
        if x.op == "placeholder" and pc.space(x) is not None and shape_query(node) in ("size", "shape"):
            dim = pc.space(x).dim
            reads = _reads_of(node, dim)
            if reads and all(_input_checked(r) for r in reads):  # checks of the feature count: the one it had
                self._read_dim_as(node, dim, shape_of(x)[dim], pc)
                if not node.users:
                    return EMPTY
        if not (pc.is_empty(x) or pc.is_const(x)):
            return LIVE
        what = shape_query(node)
        rank = len(shape_of(x))  # fixed by the input ranks the cut model checks
        if what in ("dim", "ndimension", "ndim"):
            _use_value(node, rank)
            return EMPTY
        for user in list(node.users):
            if user.op == "call_function" and user.target is builtins.len:  # len(x.size())
                _use_value(user, rank)
                pc.erase(user)
        if not node.users:
            return EMPTY
        if what in METADATA_READS and pc.is_const(x):
            pc.replace_input(node, x, pc.const_attr(x, node))  # the constant's own dtype and device
            return LIVE
        if what == "dtype":  # of a tensor whose channels all closed: the one it had
            _use_value(node, tensor_meta(x).dtype)
            return EMPTY
        if what in METADATA_READS:  # the device and the like: any live tensor with the batch
            pc.replace_input(node, x, pc.reference(x, [0]))
            return LIVE
        src = pc.space(x)
        dims = self._dims_read(node, src)
        if src is not None and src.dim in dims:
            # A channel count that is read is kept whole (see connect): it is a literal.
            self._read_dim_as(node, src.dim, shape_of(x)[src.dim], pc)
            if not node.users:
                return EMPTY
            dims = self._dims_read(node, src)
        found = self._live_source(x, dims, pc)
        if found is None or (len(shape_of(found[0])) != len(shape_of(x)) and not self._reads_by_index(node)):
            return self._read_dim_by_dim(node, dims, pc)
        ref, where = found
        pc.replace_input(node, x, ref)
        if any(where[d] != d for d in dims):
            self._read_dims_of(node, where)
        return LIVE

    @staticmethod
    def _reads_by_index(node: fx.Node) -> bool:
        """Whether `node` reads sizes one by one (``x.size(d)``, ``x.shape[d]``): they can be
        read off a tensor of another rank."""
        return _reads_one_size(node) or all(
            u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int) for u in node.users)

    def _live_source(self, x: fx.Node, dims: list[int], pc: Pruning) -> tuple[fx.Node, list[int]] | None:
        """A live tensor with `x`'s sizes on `dims`, and where x's dims are in it (``where[d]``),
        found through the permutes, transposes and reshapes keeping those dims that made x."""
        source, where = x, list(range(len(shape_of(x))))  # where[d]: dim d of x, as a dim of source
        while True:
            try:
                return pc.reference(source, [where[d] for d in dims]), where
            except PruneError:
                if not (pc.is_empty(source) or pc.is_const(source)):
                    return None
                where = self._dims_before(source, where)
                if where is None or any(where[d] is None for d in dims):
                    return None
                source = source.args[0]

    def _dims_before(self, node: fx.Node, where: list) -> list | None:
        """The dims `where` of `node`'s output as dims of its input, through a permute or a
        reshape (None for a dim a reshape does not keep); None for other ops."""
        if self._is_permute(node):
            probe = run_on(node, torch.empty(PRIMES[: len(shape_of(node.args[0]))], device="meta"))
            return [PRIMES.index(probe.shape[w]) if w is not None else None for w in where]
        if target_name(node) in ("view", "reshape"):
            before, after = list(shape_of(node.args[0])), list(shape_of(node))
            kept = {preserved_dim(before, i, after): i for i in range(len(before))}
            return [kept.get(w) for w in where]
        return None

    def _set_by_code(self, x: fx.Node, d: int) -> bool:
        """Whether dim `d` of `x` got its size from a literal of a reshape upstream
        (``view(B, N, -1, 64)``): the same at any input size."""
        source, where = x, [d]
        while where is not None and where[0] is not None:
            shape = target_shape(source)
            if shape is not None and len(shape) == len(shape_of(source)):
                size = shape[where[0]]
                if isinstance(size, int) and size != -1:
                    return True
            where = self._dims_before(source, where)
            source = source.args[0]
        return False

    def _read_dim_by_dim(self, node: fx.Node, dims: list[int], pc: Pruning) -> Outcome:
        """Each size read off its own live tensor where no one tensor has them all (transformers'
        repeat_kv reads the batch, heads, length and head dim of a key whose heads all closed)."""
        x = node.args[0]
        missing = []
        for d in dims:
            if self._set_by_code(x, d):
                self._read_dim_as(node, d, shape_of(x)[d], pc)
                continue
            found = self._live_source(x, [d], pc)
            if found is None:
                missing.append(d)
                continue
            ref, where = found
            self._read_dim_as(node, d, pc.insert(node, "call_method", "size", (ref, where[d])), pc)
        if not missing:
            return EMPTY if not node.users else LIVE
        return self._read_example_sizes(node, missing, pc)

    def _read_example_sizes(self, node: fx.Node, dims: list[int], pc: Pruning) -> Outcome:
        """No live tensor has the sizes read (everything upstream became constant: a UNet's
        encoder whose skip channels all closed): the example's sizes, exact at the example
        input's spatial size, which summary() then says. The batch is always live."""
        x = node.args[0]
        if 0 in dims:
            raise PruneError(f"{describe(node, node.graph.owning_module)} reads the batch size of a constant "
                             "no live tensor has; please report this model")
        for d in dims:
            self._read_dim_as(node, d, shape_of(x)[d], pc)
        if node.users:
            raise PruneError(f"{describe(node, node.graph.owning_module)} reads the whole shape of a constant "
                             "no live tensor has; please report this model")
        pc.holds_at_example_size(node)
        return EMPTY

    @staticmethod
    def _read_dim_as(node: fx.Node, dim: int, size, pc: Pruning) -> None:
        """Reads of `dim` through `node` become `size`: a literal, or a node reading it elsewhere."""
        for read in _reads_of(node, dim):
            _use_value(read, size)
            if read is not node:
                pc.erase(read)

    @staticmethod
    def _is_permute(node: fx.Node) -> bool:
        return target_name(node) in Rearrange._MOVES

    def _read_dims_of(self, node: fx.Node, where: list[int]) -> None:
        """Point `node`'s reads at the dims `where` of its new input."""
        if _reads_one_size(node):
            set_arg(node, 1, "dim", where[normalize_dim(arg(node, 1, "dim"), len(where))])
            return
        for user in list(node.users):
            index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
            if not isinstance(index, int):
                raise PruneError(f"{describe(node, node.graph.owning_module)} reads the whole shape of a cut tensor "
                                 "made by a permute; please report this model")
            user.args = (user.args[0], where[normalize_dim(index, len(where))])

    def _dims_read(self, node: fx.Node, src) -> list[int]:
        """The dims whose sizes `node` and the indexing of its result read (the batch, for
        reads of dtype or device: any model input then serves)."""
        ndim = len(shape_of(node.args[0]))
        if _reads_one_size(node):
            return [normalize_dim(arg(node, 1, "dim"), ndim)]
        dims: set[int] = set()
        for user in node.users:
            indexed = dims_indexed(user, ndim)
            if indexed is None:
                dims.update(d for d in range(ndim) if d != src.dim)
            else:
                dims.update(normalize_dim(d, ndim) for d in indexed)
        return sorted(dims) or [0]


def _use_value(node: fx.Node, value) -> None:
    """Every read of `node` becomes `value` (a constant, or another node)."""
    for user in list(node.users):
        user.args = map_arg(user.args, lambda n: value if n is node else n)
        user.kwargs = map_arg(user.kwargs, lambda n: value if n is node else n)


def _only_sizes(node: fx.Node) -> bool:
    """Whether a size read (times ints) is only ever the target size of a view, reshape or
    expand, whose rules check where (:func:`~lumos_fx.rules.api.check_read_counts`)."""
    for user in node.users:
        if user.op == "call_function" and user.target is operator.mul and size_read(user) is not None:
            if not _only_sizes(user):
                return False
        elif target_name(user) not in ("view", "reshape", "expand") or user.args[0] is node:
            return False
    return bool(node.users)


def _input_checked(node: fx.Node) -> bool:
    """Whether `node`, a read of one size of a model input (``x.size(1)``, ``x.shape[1]``), is
    only ever compared, the comparison feeding the trace's guards (``torch._assert``) alone."""
    source = node.args[0] if _reads_one_size(node) else node.args[0].args[0]
    return source.op == "placeholder" and bool(node.users) and all(_feeds_guards_only(user) for user in node.users)


_COMPARISONS = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)


def _feeds_guards_only(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in _COMPARISONS + (operator.not_,):
        return False
    return bool(node.users) and all(user.target is torch._assert or _feeds_guards_only(user) for user in node.users)


def _reads_of(node: fx.Node, dim: int) -> list[fx.Node]:
    """The nodes whose value is the size of dim `dim` read through `node`: ``x.size(dim)`` itself,
    or the ``[dim]`` of ``x.shape`` / ``x.size()``."""
    ndim = len(shape_of(node.args[0]))
    if _reads_one_size(node):
        return [node] if normalize_dim(arg(node, 1, "dim"), ndim) == dim else []
    return [u for u in node.users if [normalize_dim(d, ndim) for d in dims_indexed(u, ndim) or ()] == [dim]]


def _reads_one_size(node: fx.Node) -> bool:
    """``x.size(d)``, as opposed to ``x.size()``."""
    return node.op == "call_method" and node.target == "size" and len(node.args) + len(node.kwargs) > 1


class Assertion(Rule):
    """``torch._assert(condition, message)``: a guard on sizes or dtypes the trace took from
    the example inputs (:mod:`lumos_fx.concrete`), or fx's check of a constant argument. It
    reads values, never channels; the shape reads it checks have their own rule."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        for value in node.all_input_nodes:
            if an.space(value) is not None:
                an.accept(an.space(value))


class NewTensor(Rule):
    """``x.new_empty(size)``, ``x.new_zeros``, ``x.new_ones``, ``x.new_full(size, value)``: a
    tensor of `size` with ``x``'s dtype and device, which reads none of ``x``'s channels (drop
    path's per-sample mask: ``x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(p)``). A channel
    count among the sizes keeps the channels it counts."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        src = an.space(node.args[0])
        if src is not None:
            an.accept(src)
        size = node.kwargs.get("size", node.args[1] if len(node.args) > 1 else ())
        sizes = list(size) if isinstance(size, (tuple, list)) else list(node.args[1:])
        check_read_counts(node, sizes, None, an)


REGISTRY.register(ShapeRead(), getattr, "size", "dim", "ndimension", "numel")
REGISTRY.register(NewTensor(), "new_empty", "new_zeros", "new_ones", "new_full")
REGISTRY.register(Assertion(), torch._assert, _assert_is_none)
