"""Where does an activation module's output go?  A static look at the forward source.

The surgery must never give a k-bit code to an activation whose output is multiplied by
another tensor (a gated MLP it did not recognise): the product keeps that output anyway
and its gradient needs more than f'.  A probe forward would need inputs the surgery does
not have (and torch.fx cannot trace most Hugging Face layers: data-dependent branches,
kwargs, caches), so this module reads the Python source of the methods of the module
that owns the activation and follows its output through the code (a taint analysis on
the AST): assignments, tuple unpacking, views and casts, parameter-free submodules
(dropout) and branches carry it; parameterised layers (Linear, Conv), ``@`` and
``F.linear`` stop it.  A ``*`` or ``/`` by anything but a number literal, ``torch.mul``,
``.mul``, ``einsum`` on a carried value is a product.  Returned values are followed into
the caller (the grandparent's source); ``nn.Sequential`` passes to the next sibling.
Whatever cannot be followed (no source, the activation passed as a value, its output
handed to a helper method) is reported as not analysed, and the caller leaves the
activation alone: wrong answers can only make the surgery do less, never code a product.

The test zoo (tests/python/test_torch_zoo.py) checks the result independently, at run
time, with a ``__torch_function__`` mode on real forward passes.
"""
from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from torch import nn

_MUL_NAMES = {"mul", "mul_", "multiply", "div", "div_", "divide", "true_divide", "addcmul",
              "addcdiv", "einsum", "prod", "outer", "kron"}
_LINEAR_NAMES = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d", "matmul", "mm", "bmm", "addmm",
                 "baddbmm", "embedding"}
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "T"}
_META_METHODS = {"size", "dim", "numel", "item", "tolist", "data_ptr", "element_size",
                 "is_contiguous", "stride", "get_device", "nelement"}
_FUNCTIONAL_ACTS = {"gelu", "silu", "relu", "relu6", "leaky_relu", "hardtanh", "elu", "selu",
                    "mish", "sigmoid", "tanh", "softplus", "hardswish", "hardsigmoid",
                    "quick_gelu", "swish", "glu", "celu", "gelu_new", "relu_", "silu_"}
_MAX_DEPTH = 6


@dataclass
class Use:
    """What happens to a module's output in the code that calls it."""
    product: bool = False       # multiplied / divided by another tensor
    dropout_p: float = 0.0      # largest p of a dropout it passes through (1.0: unknown)
    kept: bool = False          # a layer that keeps its input (Linear, Conv, matmul) takes it
    unknown: List[str] = field(default_factory=list)  # what could not be followed
    where: List[str] = field(default_factory=list)    # Class.method where a product is

    def merge(self, o: Use) -> None:
        self.product |= o.product
        self.dropout_p = max(self.dropout_p, o.dropout_p)
        self.kept |= o.kept
        self.unknown += o.unknown
        self.where += o.where


@functools.cache
def _class_methods(klass) -> Tuple[Tuple[str, ast.FunctionDef], ...]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return ()
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.ClassDef):
        return ()
    return tuple((f"{klass.__name__}.{f.name}", f) for f in node.body
                 if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _methods(cls) -> Tuple[Tuple[str, ast.FunctionDef], ...]:
    """(qualified name, AST) of every method of cls and its bases below nn.Module, read
    from each class's source once (cached: reading and parsing source is the slow part)."""
    out: Tuple[Tuple[str, ast.FunctionDef], ...] = ()
    for klass in cls.__mro__:
        if klass is object or klass.__module__.startswith(("torch.nn.modules.module",
                                                           "transformers.modeling_utils",
                                                           "transformers.generation")):
            continue
        out += _class_methods(klass)
    return out


def _is_sequential(m) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


class _Taint:
    """Follows self.<attr>(...)'s result through one method body."""

    def __init__(self, owner: nn.Module, attr: str, fn: ast.FunctionDef, qual: str):
        self.owner, self.attr, self.qual = owner, attr, qual
        self.self_name = fn.args.args[0].arg if fn.args.args else "self"
        self.use = Use()
        self.found = False
        self.returned = False

    # -- helpers
    def _is_self_attr(self, e, name=None) -> bool:
        return (isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name)
                and e.value.id == self.self_name and (name is None or e.attr == name))

    def _const(self, e) -> bool:
        """A plain number: a literal, or a number-valued attribute of self."""
        if isinstance(e, ast.Constant):
            return isinstance(e.value, (int, float))
        if isinstance(e, ast.UnaryOp):
            return self._const(e.operand)
        if self._is_self_attr(e):
            v = getattr(self.owner, e.attr, None)
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        return False

    def _functional_dropout(self, e: ast.Call) -> None:
        """F.dropout(x, p=...): p when it is a literal or a number attribute of self,
        else 1.0 (unknown, possibly active)."""
        p = next((k.value for k in e.keywords if k.arg == "p"),
                 e.args[1] if len(e.args) > 1 else None)
        val = 1.0
        if isinstance(p, ast.Constant) and isinstance(p.value, (int, float)):
            val = float(p.value)
        elif p is not None and self._is_self_attr(p) and self._const(p):
            val = float(getattr(self.owner, p.attr))
        self.use.dropout_p = max(self.use.dropout_p, val)

    def _product(self, node) -> None:
        self.use.product = True
        self.use.where.append(f"{self.qual}: {ast.unparse(node)[:80]}")

    # -- expressions: returns whether the value carries the activation's output
    def expr(self, e, env) -> bool:
        if e is None:
            return False
        if isinstance(e, ast.Name):
            return env.get(e.id, False)
        if isinstance(e, ast.Constant):
            return False
        if isinstance(e, ast.Attribute):
            if self._is_self_attr(e, self.attr):
                self.use.unknown.append(f"{self.qual} uses self.{self.attr} as a value")
                return False
            v = self.expr(e.value, env)
            return False if e.attr in _META_ATTRS else v
        if isinstance(e, ast.Call):
            return self.call(e, env)
        if isinstance(e, ast.BinOp):
            lt, rt = self.expr(e.left, env), self.expr(e.right, env)
            if isinstance(e.op, (ast.Mult, ast.Div, ast.FloorDiv)):
                if (lt and not self._const(e.right)) or (rt and not self._const(e.left)):
                    self._product(e)
            if isinstance(e.op, ast.MatMult):
                if lt or rt:
                    self.use.kept = True
                return False
            return lt or rt
        if isinstance(e, ast.Compare):
            for c in [e.left] + e.comparators:
                self.expr(c, env)
            return False
        if isinstance(e, ast.IfExp):
            self.expr(e.test, env)
            return self.expr(e.body, env) | self.expr(e.orelse, env)
        if isinstance(e, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                          ast.GeneratorExp)):
            if any(self._is_self_attr(n, self.attr) for n in ast.walk(e)) or any(
                    isinstance(n, ast.Name) and env.get(n.id) for n in ast.walk(e)):
                self.use.unknown.append(f"{self.qual}: used inside {type(e).__name__}")
            return False
        if isinstance(e, ast.NamedExpr):
            v = self.expr(e.value, env)
            env[e.target.id] = v
            return v
        return any([self.expr(c, env) for c in ast.iter_child_nodes(e)
                    if isinstance(c, ast.expr)])

    def call(self, e: ast.Call, env) -> bool:
        f = e.func
        argv = [self.expr(a, env) for a in e.args] + [self.expr(k.value, env)
                                                       for k in e.keywords]
        anyt = any(argv)
        if self._is_self_attr(f, self.attr):
            self.found = True
            return True
        if self._is_self_attr(f):
            mod = getattr(self.owner, f.attr, None)
            if isinstance(mod, nn.Module):
                if not anyt:
                    return False
                if isinstance(mod, nn.Dropout):
                    self.use.dropout_p = max(self.use.dropout_p, float(mod.p))
                    return True
                if any(True for _ in mod.parameters()):
                    self.use.kept = True  # Linear, Conv, norms: keep their input
                    return False
                if type(mod).__module__.startswith(("torch.nn.modules",
                                                    "transformers.activations")):
                    # torch's parameter-free layers (pooling, flatten, activations) take
                    # one tensor: they carry the value, never multiply it by another
                    self.use.kept |= isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d,
                                                      nn.MaxPool3d))
                    return True
                self.use.unknown.append(f"{self.qual}: passed to {type(mod).__name__}")
                return True
            if anyt:  # a helper method of self: not followed
                self.use.unknown.append(f"{self.qual}: passed to self.{f.attr}()")
            return anyt
        if isinstance(f, ast.Attribute):
            base = self.expr(f.value, env)
            name = f.attr
            if name in _META_METHODS:
                return False
            others = [a for a in e.args]
            if base and name in _MUL_NAMES and not all(self._const(a) for a in others):
                self._product(e)
            elif anyt and name in _MUL_NAMES:
                self._product(e)
            if (base or anyt) and name in _LINEAR_NAMES:
                self.use.kept = True
                return False
            if (base or anyt) and name == "dropout":
                self._functional_dropout(e)
            return base or anyt
        if isinstance(f, ast.Name):
            if anyt and f.id in _MUL_NAMES:
                self._product(e)
            if anyt and f.id in _LINEAR_NAMES:
                self.use.kept = True
                return False
            if anyt and f.id == "dropout":
                self._functional_dropout(e)
            if f.id in ("isinstance", "len", "hasattr", "getattr", "type", "id"):
                return False
            return anyt
        return anyt or self.expr(f, env)

    # -- statements
    def assign(self, t, v, env) -> None:
        if isinstance(t, ast.Name):
            env[t.id] = v
        elif isinstance(t, (ast.Tuple, ast.List)):
            for el in t.elts:
                self.assign(el, v, env)
        elif isinstance(t, ast.Starred):
            self.assign(t.value, v, env)
        elif isinstance(t, ast.Subscript):
            self.expr(t.slice, env)
            root = t.value
            while isinstance(root, (ast.Subscript, ast.Attribute)):
                root = root.value
            if v and isinstance(root, ast.Name):
                env[root.id] = True
        elif isinstance(t, ast.Attribute) and v:
            self.use.unknown.append(f"{self.qual}: stored in {ast.unparse(t)}")

    def block(self, body, env) -> Dict[str, bool]:
        for st in body:
            env = self.stmt(st, env)
        return env

    @staticmethod
    def _union(a, b):
        return {k: a.get(k, False) or b.get(k, False) for k in set(a) | set(b)}

    def stmt(self, s, env) -> Dict[str, bool]:
        if isinstance(s, ast.Assign):
            v = self.expr(s.value, env)
            for t in s.targets:
                self.assign(t, v, env)
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                self.assign(s.target, self.expr(s.value, env), env)
        elif isinstance(s, ast.AugAssign):
            tv = self.expr(s.target, env)
            vv = self.expr(s.value, env)
            if isinstance(s.op, (ast.Mult, ast.Div)) and (
                    (tv and not self._const(s.value)) or vv):
                self._product(s)
            self.assign(s.target, tv or vv, env) if isinstance(s.target, ast.Name) else None
        elif isinstance(s, ast.Return):
            if self.expr(s.value, env):
                self.returned = True
        elif isinstance(s, ast.If):
            self.expr(s.test, env)
            env = self._union(self.block(s.body, dict(env)), self.block(s.orelse, dict(env)))
        elif isinstance(s, (ast.For, ast.AsyncFor, ast.While)):
            if isinstance(s, ast.While):
                self.expr(s.test, env)
            else:
                self.assign(s.target, self.expr(s.iter, env), env)
            for _ in range(2):  # a second pass carries values around the loop
                env = self._union(env, self.block(s.body, dict(env)))
            env = self.block(s.orelse, env)
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            for it in s.items:
                v = self.expr(it.context_expr, env)
                if it.optional_vars is not None:
                    self.assign(it.optional_vars, v, env)
            env = self.block(s.body, env)
        elif isinstance(s, ast.Try):
            env = self.block(s.body, env)
            for h in s.handlers:
                env = self._union(env, self.block(h.body, dict(env)))
            env = self.block(s.orelse + s.finalbody, env)
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any(self._is_self_attr(n, self.attr) for n in ast.walk(s)):
                self.use.unknown.append(f"{self.qual}: used in nested {s.name}")
        elif isinstance(s, ast.Expr):
            self.expr(s.value, env)
        else:
            for c in ast.iter_child_nodes(s):
                if isinstance(c, ast.expr):
                    self.expr(c, env)
        return env


class Analyzer:
    """Builds the parent map of `model` once; answers `use(module)` for any submodule."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.parents: Dict[int, List[Tuple[nn.Module, str]]] = {}
        self.paths: Dict[int, str] = {}
        for path, m in model.named_modules(remove_duplicate=False):
            self.paths.setdefault(id(m), path)
            for cname, child in m.named_children():
                self.parents.setdefault(id(child), []).append((m, cname))
    def use(self, module: nn.Module, depth: int = 0) -> Use:
        out = Use()
        if depth > _MAX_DEPTH:
            out.unknown.append("call chain too deep to follow")
            return out
        for parent, cname in self.parents.get(id(module), []):
            if _is_sequential(parent):
                names = list(parent._modules)
                i = names.index(cname)
                if i + 1 < len(names):
                    nxt = parent._modules[names[i + 1]]
                    if isinstance(nxt, nn.Dropout):
                        out.dropout_p = max(out.dropout_p, float(nxt.p))
                    elif any(True for _ in nxt.parameters()):
                        out.kept = True
                else:  # the Sequential's own output
                    out.merge(self.use(parent, depth + 1))
                continue
            if isinstance(parent, (nn.ModuleList, nn.ModuleDict)):
                out.unknown.append(f"called through {type(parent).__name__} "
                                   f"{self.paths.get(id(parent), '?')!r}")
                continue
            found = False
            for qual, fn in _methods(type(parent)):
                if not any(isinstance(n, ast.Attribute) and n.attr == cname
                           for n in ast.walk(fn)):
                    continue
                t = _Taint(parent, cname, fn, qual)
                t.block(fn.body, {})
                out.merge(t.use)
                found |= t.found
                if t.returned:
                    out.merge(self.use(parent, depth + 1))
            if not found:
                out.unknown.append(f"no call of self.{cname} found in "
                                   f"{type(parent).__name__}'s source")
        return out


def functional_activations(model: nn.Module) -> List[Tuple[str, str]]:
    """(module path, call text) of activation functions called inside forward code
    (``F.gelu(...)``, ``torch.relu(...)``): the surgery cannot replace them."""
    out: List[Tuple[str, str]] = []
    seen_cls: Dict[type, List[str]] = {}
    for path, m in model.named_modules():
        cls = type(m)
        if cls.__module__.startswith(("torch.nn.modules", "unswag.", "transformers.activations")):
            continue  # activation modules themselves, and torch's layers
        if cls not in seen_cls:
            calls = []
            for qual, fn in _methods(cls):
                for n in ast.walk(fn):
                    if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                            and n.func.attr in _FUNCTIONAL_ACTS
                            and isinstance(n.func.value, (ast.Name, ast.Attribute))
                            and ast.unparse(n.func.value).split(".")[-1]
                            in ("F", "functional", "torch", "nn")):
                        calls.append(f"{qual}: {ast.unparse(n)[:70]}")
            seen_cls[cls] = calls
        out += [(path or "(model)", c) for c in seen_cls[cls]]
    return out

