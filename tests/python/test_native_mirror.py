"""python/unswag/_native.py mirrors include/unswag.h: enums, structs, ctypes signatures.

The header is parsed as text (comments stripped), so a change to it that the
ctypes layer does not follow fails here instead of corrupting memory.
"""
import ctypes
import os
import re

import pytest

from unswag import _native as N

HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "include", "unswag.h")


def _header():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _defines(text):
    return {m[1]: m[2].strip() for m in re.finditer(r"#define (\w+)[ \t]+([^\n]+)", text)}


def _int_expr(expr, defines):
    """Value of an array size such as `UNSWAG_MAX_LEVELS - 1`."""
    expr = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: f"({defines[m[0]]})", expr)
    assert re.fullmatch(r"[\d\s()+\-*/]+", expr), expr
    return int(eval(expr))


def _enums(text):
    out = {}
    for m in re.finditer(r"typedef enum (\w+) \{(.*?)\} \1;", text, re.S):
        out[m[1]] = {name: int(value) for name, value in re.findall(r"(\w+)\s*=\s*(\d+)", m[2])}
    return out


def _structs(text):
    out = {}
    defines = _defines(text)
    for m in re.finditer(r"typedef struct (\w+) \{(.*?)\} \1;", text, re.S):
        fields = []
        for decl in m[2].split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            base, names = re.fullmatch(r"((?:const )?\w+(?: \*)?)\s*(.+)", decl).groups()
            for name in names.split(","):
                name = name.strip()
                ptr = name.startswith("*")
                name = name.lstrip("*")
                dim = re.fullmatch(r"(\w+)\[(.+)\]", name)
                count = _int_expr(dim[2], defines) if dim else None
                fields.append((dim[1] if dim else name, base + (" *" if ptr else ""), count))
        out[m[1]] = fields
    return out


def _functions(text):
    out = {}
    for m in re.finditer(r"UNSWAG_API\s+([\w\s\*]+?)\s*\b(unswag_\w+)\s*\(([^)]*)\)\s*;", text):
        params = [" ".join(p.split()) for p in m[3].split(",")]
        out[m[2]] = (" ".join(m[1].split()), [] if params == ["void"] else params)
    return out


ENUMS = {"unswag_status", "unswag_dtype", "unswag_activation", "unswag_cpu_path",
         "unswag_code_kind"}


def _ctype_of(c_type):
    """The ctypes type a C scalar type maps to (None for pointers, checked apart)."""
    c_type = c_type.replace("const ", "")
    if "*" in c_type:
        return None
    if c_type in ENUMS or c_type == "int":
        return ctypes.c_int
    return {"size_t": ctypes.c_size_t, "float": ctypes.c_float, "double": ctypes.c_double,
            "uint16_t": ctypes.c_uint16, "uint64_t": ctypes.c_uint64}[c_type]


def test_enums_match():
    enums = _enums(_header())
    assert enums["unswag_status"]["UNSWAG_OK"] == N.OK
    assert enums["unswag_status"]["UNSWAG_ERR_CUDA_NOT_BUILT"] == N.STATUS_CUDA_NOT_BUILT
    dtypes = enums["unswag_dtype"]
    assert (dtypes["UNSWAG_F32"], dtypes["UNSWAG_F16"], dtypes["UNSWAG_BF16"]) == \
        (N.F32, N.F16, N.BF16)
    assert dtypes["UNSWAG_DTYPE_COUNT_"] == 3
    acts = {k[len("UNSWAG_"):].lower(): v for k, v in enums["unswag_activation"].items()
            if not k.endswith("_COUNT_")}
    assert acts == N.ACTIVATIONS
    assert N.EXACT <= set(acts)
    kinds = {k[len("UNSWAG_CODES_"):].lower(): v for k, v in enums["unswag_code_kind"].items()
             if not k.endswith("_COUNT_")}
    assert kinds == N.CODE_KINDS


@pytest.mark.parametrize("c_name,py_struct", [("unswag_codebook", N.Codebook),
                                              ("unswag_op", N.Op)])
def test_structs_match(c_name, py_struct):
    fields = _structs(_header())[c_name]
    py_fields = py_struct._fields_
    assert [f[0] for f in fields] == [f[0] for f in py_fields]
    for (name, c_type, count), (_, py_type) in zip(fields, py_fields):
        if count is not None:
            assert issubclass(py_type, ctypes.Array) and py_type._length_ == count, name
            py_type = py_type._type_
        if "*" in c_type:
            target = {"unswag_codebook": N.Codebook}[c_type.replace("const ", "").rstrip(" *")]
            assert py_type == ctypes.POINTER(target), name
        else:
            assert py_type == _ctype_of(c_type), name


def test_struct_sizes_match_the_library():
    """The library agrees on the layout: it fills a Codebook at the offsets ctypes expects."""
    cb = N.builtin_codebook("silu", 2)
    assert cb.bits == 2 and 0 < cb.rms_error < 1
    assert list(cb.boundaries[:3]) == sorted(cb.boundaries[:3])


def test_ctypes_signatures_match():
    lib = N.lib()
    declared = 0
    for name, (ret, params) in _functions(_header()).items():
        f = getattr(lib, name, None)
        if f is None or f.argtypes is None:
            continue  # not used from Python
        declared += 1
        assert len(f.argtypes) == len(params), name
        for c_param, py_type in zip(params, f.argtypes):
            c_type = re.sub(r"\s*\b\w+$", "", c_param) if " " in c_param else c_param
            if c_type == "unswag_derivative_fn":  # a function pointer: its ctypes prototype
                assert py_type is N.DERIVATIVE_FN, (name, c_param)
                continue
            if "*" in c_type:
                assert py_type in (ctypes.c_void_p, ctypes.c_char_p) or \
                    issubclass(py_type, ctypes._Pointer), (name, c_param)
                if "unswag_op" in c_type:
                    assert py_type == ctypes.POINTER(N.Op), (name, c_param)
                if "unswag_codebook" in c_type:
                    assert py_type == ctypes.POINTER(N.Codebook), (name, c_param)
                if c_type.replace("const ", "") == "size_t *":
                    assert py_type == ctypes.POINTER(ctypes.c_size_t), (name, c_param)
            else:
                assert py_type == _ctype_of(c_type), (name, c_param)
        if "*" in ret:
            assert f.restype in (ctypes.c_char_p, ctypes.c_void_p), name
        else:
            assert f.restype == _ctype_of(ret), name
    assert declared >= 15
