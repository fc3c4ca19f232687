//! What a global may do in a checkpoint: the allowlist of `torch.load(weights_only=True)`, the
//! data types outside it that are known to run nothing, and a denylist that only sharpens messages.
//!
//! The allowlist states facts read from torch 2.11's `torch/_weights_only_unpickler.py`
//! (`_get_allowed_globals`, `_tensor_rebuild_functions`) and the dtype, tensor-class and
//! storage-class lists it enumerates at run time. Everything not listed is unknown, and an
//! unknown *callable* is dangerous: a name missing from the denylist is never a bypass.

use super::Verdict;

/// How a global is classified, before its usage is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// In torch's weights_only allowlist: safe whatever the pickle does with it.
    Allowed,
    /// A class or enum defined by a TorchScript archive's own code (`__torch__.*`), inside a
    /// TorchScript archive.
    Archive,
    /// Outside the allowlist but known to construct plain data and run nothing (numpy arrays,
    /// datetime, argparse.Namespace ...): torch's weights_only refuses it, nothing dangerous runs.
    KnownData,
    /// `copyreg._reconstructor` / `__newobj__` / `__newobj_ex__`: instantiate the class they are
    /// given; judged by that class (and, for `_reconstructor`, its base).
    Reconstructor,
    /// `torch.storage._load_from_bytes`: torch.load(weights_only=False) of bytes embedded in the
    /// pickle; judged by scanning those bytes.
    NestedLoader,
    /// Known to run commands, code, imports, I/O or arbitrary calls.
    Denylisted,
    /// Anything else.
    Unknown,
}

/// A global: (module, name).
type Name = (&'static str, &'static str);

/// Python 2 globals that live under another module and name in Python 3 (`NAME_MAPPING`).
const NAME_MAPPING: &[(Name, Name)] = &[
    (("__builtin__", "xrange"), ("builtins", "range")),
    (("__builtin__", "reduce"), ("functools", "reduce")),
    (("__builtin__", "intern"), ("sys", "intern")),
    (("__builtin__", "unichr"), ("builtins", "chr")),
    (("__builtin__", "unicode"), ("builtins", "str")),
    (("__builtin__", "long"), ("builtins", "int")),
    (("itertools", "izip"), ("builtins", "zip")),
    (("itertools", "imap"), ("builtins", "map")),
    (("itertools", "ifilter"), ("builtins", "filter")),
    (("itertools", "ifilterfalse"), ("itertools", "filterfalse")),
    (("itertools", "izip_longest"), ("itertools", "zip_longest")),
    (("UserDict", "IterableUserDict"), ("collections", "UserDict")),
    (("UserList", "UserList"), ("collections", "UserList")),
    (("UserString", "UserString"), ("collections", "UserString")),
    (("__builtin__", "basestring"), ("builtins", "str")),
    (("exceptions", "StandardError"), ("builtins", "Exception")),
    (("UserDict", "UserDict"), ("collections", "UserDict")),
];

/// CPython's _compat_pickle.IMPORT_MAPPING (a superset of torch's), plus `exceptions`,
/// whose names NAME_MAPPING sends to builtins one by one.
const IMPORT_MAPPING: &[(&str, &str)] = &[
    ("__builtin__", "builtins"),
    ("copy_reg", "copyreg"),
    ("Queue", "queue"),
    ("SocketServer", "socketserver"),
    ("ConfigParser", "configparser"),
    ("repr", "reprlib"),
    ("tkFileDialog", "tkinter.filedialog"),
    ("tkSimpleDialog", "tkinter.simpledialog"),
    ("tkColorChooser", "tkinter.colorchooser"),
    ("tkCommonDialog", "tkinter.commondialog"),
    ("Dialog", "tkinter.dialog"),
    ("Tkdnd", "tkinter.dnd"),
    ("tkFont", "tkinter.font"),
    ("tkMessageBox", "tkinter.messagebox"),
    ("ScrolledText", "tkinter.scrolledtext"),
    ("Tkconstants", "tkinter.constants"),
    ("Tix", "tkinter.tix"),
    ("ttk", "tkinter.ttk"),
    ("Tkinter", "tkinter"),
    ("markupbase", "_markupbase"),
    ("_winreg", "winreg"),
    ("thread", "_thread"),
    ("dummy_thread", "_dummy_thread"),
    ("dbhash", "dbm.bsd"),
    ("dumbdbm", "dbm.dumb"),
    ("dbm", "dbm.ndbm"),
    ("gdbm", "dbm.gnu"),
    ("xmlrpclib", "xmlrpc.client"),
    ("SimpleXMLRPCServer", "xmlrpc.server"),
    ("httplib", "http.client"),
    ("htmlentitydefs", "html.entities"),
    ("HTMLParser", "html.parser"),
    ("Cookie", "http.cookies"),
    ("cookielib", "http.cookiejar"),
    ("BaseHTTPServer", "http.server"),
    ("test.test_support", "test.support"),
    ("commands", "subprocess"),
    ("urlparse", "urllib.parse"),
    ("robotparser", "urllib.robotparser"),
    ("urllib2", "urllib.request"),
    ("anydbm", "dbm"),
    ("_abcoll", "collections.abc"),
    ("cPickle", "pickle"),
    ("_elementtree", "xml.etree.ElementTree"),
    ("FileDialog", "tkinter.filedialog"),
    ("SimpleDialog", "tkinter.simpledialog"),
    ("DocXMLRPCServer", "xmlrpc.server"),
    ("SimpleHTTPServer", "http.server"),
    ("CGIHTTPServer", "http.server"),
    ("UserDict", "collections"),
    ("UserList", "collections"),
    ("UserString", "collections"),
    ("whichdb", "dbm"),
    ("StringIO", "io"),
    ("cStringIO", "io"),
    ("exceptions", "builtins"),
];

/// Python 2 renames: torch's `IMPORT_MAPPING` / `NAME_MAPPING` (torch/_utils.py), which the
/// weights_only unpickler applies before its allowlist lookup, and CPython's `_compat_pickle`,
/// which `pickle` applies to protocol < 3 pickles (`commands.Popen` is `subprocess.Popen`).
/// Returns the name Python resolves. No mapping leads into the allowlist except
/// `__builtin__` -> `builtins`, which torch applies too.
pub fn normalize(module: &str, name: &str) -> (String, String) {
    if let Some((_, to)) = NAME_MAPPING.iter().find(|((m, n), _)| *m == module && *n == name) {
        return (to.0.to_string(), to.1.to_string());
    }
    if let Some((_, to)) = IMPORT_MAPPING.iter().find(|(m, _)| *m == module) {
        return (to.to_string(), name.to_string());
    }
    (module.to_string(), name.to_string())
}

/// The storage classes torch enumerates (`torch._storage_classes`), without their module.
const STORAGE_CLASSES: &[&str] = &[
    "BFloat16Storage",
    "BoolStorage",
    "ByteStorage",
    "CharStorage",
    "ComplexDoubleStorage",
    "ComplexFloatStorage",
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "IntStorage",
    "LongStorage",
    "ShortStorage",
];
/// Quantized storages exist on CPU only.
const QUANTIZED_STORAGE_CLASSES: &[&str] = &[
    "QInt32Storage",
    "QInt8Storage",
    "QUInt2x4Storage",
    "QUInt4x2Storage",
    "QUInt8Storage",
];
/// `torch._tensor_classes` (dense CPU and CUDA); the sparse modules lack Bool.
const TENSOR_CLASSES: &[&str] = &[
    "BFloat16Tensor",
    "BoolTensor",
    "ByteTensor",
    "CharTensor",
    "DoubleTensor",
    "FloatTensor",
    "HalfTensor",
    "IntTensor",
    "LongTensor",
    "ShortTensor",
];
/// `str(dtype)` of every dtype torch 2.11 allows (the storage-type map, `_new_dtypes()`, and
/// the sub-byte `uint1..7` / `int1..7`), without the `torch.` prefix.
const DTYPES: &[&str] = &[
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "complex128",
    "complex64",
    "complex32",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "uint16",
    "uint32",
    "uint64",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
];
/// `torch._utils` functions in `_tensor_rebuild_functions()`.
const REBUILD_FUNCTIONS: &[&str] = &[
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_nested_tensor",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
];
const QSCHEMES: &[&str] = &[
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

/// Whether torch 2.11's `torch.load(weights_only=True)` accepts this (normalized) global.
pub fn is_allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "_codecs" => name == "encode",
        "builtins" => matches!(name, "bytearray" | "set" | "complex"),
        "torch._utils" => REBUILD_FUNCTIONS.contains(&name),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.storage" => matches!(name, "TypedStorage" | "UntypedStorage"),
        "torch" => {
            matches!(name, "Size" | "Tensor" | "device")
                || DTYPES.contains(&name)
                || QSCHEMES.contains(&name)
                || TENSOR_CLASSES.contains(&name)
                || STORAGE_CLASSES.contains(&name)
                || QUANTIZED_STORAGE_CLASSES.contains(&name)
        }
        "torch.cuda" => TENSOR_CLASSES.contains(&name) || STORAGE_CLASSES.contains(&name),
        "torch.sparse" | "torch.cuda.sparse" => name != "BoolTensor" && TENSOR_CLASSES.contains(&name),
        _ => false,
    }
}

/// Globals outside the allowlist whose construction is plain data: calling them with any
/// arguments imports nothing unusual and runs no user code. Loading still needs
/// `weights_only=False` (or `add_safe_globals`), hence needs-code, never safe.
fn is_known_data(module: &str, name: &str) -> bool {
    match module {
        "builtins" => matches!(
            name,
            "int"
                | "float"
                | "str"
                | "bytes"
                | "bool"
                | "tuple"
                | "list"
                | "dict"
                | "frozenset"
                | "slice"
                | "range"
                | "object"
                | "NoneType"
                | "Ellipsis"
                | "NotImplemented"
        ),
        "collections" => matches!(name, "defaultdict" | "deque"),
        "datetime" => matches!(name, "datetime" | "date" | "time" | "timedelta" | "timezone"),
        "decimal" => name == "Decimal",
        "fractions" => name == "Fraction",
        "uuid" => name == "UUID",
        "argparse" => name == "Namespace",
        "types" => name == "SimpleNamespace",
        "pathlib" => matches!(
            name,
            "Path" | "PosixPath" | "WindowsPath" | "PurePath" | "PurePosixPath" | "PureWindowsPath"
        ),
        "numpy" => matches!(name, "dtype" | "ndarray"),
        "numpy.core.multiarray" | "numpy._core.multiarray" => matches!(name, "_reconstruct" | "scalar"),
        "numpy.core.numeric" | "numpy._core.numeric" => name == "_frombuffer",
        "numpy.dtypes" => name.ends_with("DType") && name.chars().all(|c| c.is_ascii_alphanumeric()),
        _ => false,
    }
}

/// Whether a global is one of the builtin data types that `copyreg._reconstructor` may use as
/// its `base` without running anything but that type's own constructor.
pub fn is_plain_base(module: &str, name: &str) -> bool {
    module == "builtins"
        && matches!(
            name,
            "object"
                | "dict"
                | "list"
                | "set"
                | "frozenset"
                | "tuple"
                | "int"
                | "float"
                | "str"
                | "bytes"
                | "bytearray"
                | "complex"
                | "bool"
        )
}

/// Known-dangerous names: a module, or `module.name`, and why. Prefix matches stop at a dot.
const DENYLIST: &[(&str, &str)] = &[
    ("os", "runs commands or touches files and the environment"),
    ("posix", "runs commands or touches files (os on Unix)"),
    ("nt", "runs commands or touches files (os on Windows)"),
    ("subprocess", "runs commands"),
    ("_posixsubprocess", "runs commands"),
    ("pty", "runs commands"),
    ("popen2", "runs commands"),
    ("commands", "runs commands"),
    ("sys", "changes the interpreter (modules, paths, hooks)"),
    ("builtins.eval", "evaluates Python code"),
    ("builtins.exec", "executes Python code"),
    ("builtins.execfile", "executes a Python file"),
    ("builtins.compile", "compiles Python code"),
    (
        "builtins.getattr",
        "reaches any attribute (e.g. os.system from a module)",
    ),
    ("builtins.setattr", "changes any attribute"),
    ("builtins.delattr", "deletes any attribute"),
    ("builtins.__import__", "imports any module"),
    ("builtins.open", "opens (and may truncate) files"),
    ("builtins.file", "opens files"),
    ("builtins.breakpoint", "starts a debugger"),
    ("builtins.input", "reads from the terminal"),
    ("builtins.globals", "exposes interpreter state"),
    ("builtins.locals", "exposes interpreter state"),
    ("builtins.vars", "exposes interpreter state"),
    ("builtins.help", "starts the interactive help (a pager)"),
    ("builtins.exit", "exits the interpreter"),
    ("builtins.quit", "exits the interpreter"),
    ("builtins.apply", "calls any function"),
    ("builtins.reload", "re-imports a module"),
    ("builtins.type", "creates classes"),
    ("runpy", "runs modules and scripts"),
    ("importlib", "imports any module"),
    ("imp", "imports any module"),
    ("pkgutil", "imports any module"),
    ("zipimport", "imports code from archives"),
    ("code", "runs Python code"),
    ("codeop", "compiles Python code"),
    ("timeit", "runs Python code"),
    ("cProfile", "runs Python code"),
    ("profile", "runs Python code"),
    ("trace", "runs Python code"),
    ("pdb", "starts a debugger"),
    ("bdb", "starts a debugger"),
    ("doctest", "runs Python code"),
    ("pydoc", "runs a pager command"),
    ("types", "builds functions and code objects"),
    ("pickle", "unpickles more data (a nested, unchecked pickle)"),
    ("_pickle", "unpickles more data (a nested, unchecked pickle)"),
    ("dill", "unpickles more data, including code"),
    ("cloudpickle", "unpickles more data, including code"),
    ("joblib", "unpickles more data"),
    ("shelve", "unpickles more data"),
    ("marshal", "loads code objects"),
    ("socket", "opens network connections"),
    ("_socket", "opens network connections"),
    ("ssl", "opens network connections"),
    ("http", "makes network requests"),
    ("urllib", "makes network requests"),
    ("requests", "makes network requests"),
    ("ftplib", "makes network requests"),
    ("smtplib", "sends mail"),
    ("telnetlib", "opens network connections"),
    ("xmlrpc", "makes network calls"),
    ("asyncio", "runs commands and network I/O"),
    ("multiprocessing", "starts processes"),
    ("concurrent", "starts processes and threads"),
    ("threading", "starts threads"),
    ("_thread", "starts threads"),
    ("signal", "changes signal handlers"),
    ("shutil", "copies, moves and deletes files"),
    ("tempfile", "creates files"),
    ("io", "opens files"),
    ("_io", "opens files"),
    ("codecs.open", "opens files"),
    ("tarfile", "extracts archives to disk"),
    ("zipfile", "extracts archives to disk"),
    ("ctypes", "calls native code"),
    ("_ctypes", "calls native code"),
    ("cffi", "calls native code"),
    ("webbrowser", "opens a browser"),
    ("antigravity", "opens a browser on import"),
    ("logging.config", "can listen for and run configuration code"),
    ("functools.partial", "wraps any call, hiding it from a scanner"),
    ("functools.partialmethod", "wraps any call"),
    ("functools.reduce", "calls any function"),
    (
        "_functools.reduce",
        "calls any function (functools.reduce as Python pickles it)",
    ),
    (
        "operator",
        "calls or reaches anything (attrgetter, methodcaller, itemgetter, call)",
    ),
    ("_operator", "calls or reaches anything"),
    ("copyreg", "changes the pickle registry"),
    ("pip", "installs packages"),
    // Third-party modules whose classes run commands or code when constructed with a plain
    // string, which the Enum rule below would otherwise let through as needs-code.
    ("pexpect", "runs commands"),
    ("ptyprocess", "runs commands"),
    ("sh", "runs commands"),
    ("plumbum", "runs commands"),
    ("invoke", "runs commands"),
    ("fabric", "runs remote commands"),
    ("paramiko", "runs remote commands"),
    ("mako", "runs template code when a template is built"),
    ("git", "runs git commands (GitPython)"),
    ("huggingface_hub.repository", "runs git commands"),
    ("IPython", "runs interactive shells and code"),
    ("selenium", "starts browsers and drivers"),
    ("torch.multiprocessing", "starts processes"),
    ("torch.utils.tensorboard", "writes event files"),
    ("setuptools", "builds and installs code"),
    ("distutils", "builds and installs code"),
    ("ensurepip", "installs packages"),
    ("venv", "creates environments"),
    ("numpy.f2py", "compiles and imports Fortran/C code"),
    ("numpy.distutils", "builds code"),
    ("numpy.testing", "runs code strings"),
    ("numpy.load", "unpickles more data (allow_pickle)"),
    ("numpy.lib.npyio", "unpickles more data"),
    ("numpy.ctypeslib", "loads native libraries"),
    ("torch.load", "unpickles more data with weights_only=False"),
    ("torch.serialization.load", "unpickles more data"),
    ("torch.hub", "downloads and runs code"),
    ("torch.jit", "compiles and runs TorchScript"),
    ("torch._inductor", "compiles and loads code"),
    ("torch._dynamo", "compiles code"),
    ("torch.classes", "calls native custom classes"),
    ("torch.ops", "calls arbitrary registered operators"),
    ("torch.fx", "rebuilds modules by executing generated Python code"),
    ("torch.package", "imports code packaged in the archive"),
    ("torch.utils.cpp_extension", "compiles and loads native code"),
    ("torch.distributed.rpc", "makes remote calls"),
    ("torch._C._jit", "runs TorchScript internals"),
];

/// The denylist entry a normalized name falls under, if any. A dotted name is resolved by
/// protocol 4+ unpicklers attribute by attribute (`getattr(getattr(torch.serialization, 'os'),
/// 'system')`), so every interpretation counts and the most severe wins: the whole dotted path
/// and its prefixes (`builtins.getattr.x` is within `builtins.getattr`), every suffix of the
/// name's components (`serialization.os.system` reaches `os.system`, `x.os` reaches the module
/// `os`), and any dunder component (`__globals__`, `__self__`, `__builtins__` reach arbitrary
/// objects). Suffixes of the *module* are not interpretations: the module is imported by its
/// full name, and package paths such as `mylib.io` are legitimate.
pub fn denylisted(module: &str, name: &str) -> Option<&'static str> {
    let dotted = format!("{module}.{name}");
    let hit = |s: &str| {
        DENYLIST
            .iter()
            .find(|(entry, _)| s == *entry || (s.starts_with(entry) && s.as_bytes().get(entry.len()) == Some(&b'.')))
            .map(|(_, why)| *why)
    };
    if let Some(why) = hit(&dotted) {
        return Some(why);
    }
    if name.contains('.') {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.iter().any(|p| is_dunder(p)) {
            return Some(
                "walks dunder attributes (__globals__, __self__, __builtins__ ...) to reach arbitrary objects",
            );
        }
        for start in 0..parts.len() {
            if let Some(why) = hit(&parts[start..].join(".")) {
                return Some(why);
            }
        }
    }
    None
}

fn is_dunder(part: &str) -> bool {
    part.len() > 4 && part.starts_with("__") && part.ends_with("__")
}

/// Why a dotted name is not simply looked up: what CPython does with it at `protocol` (the
/// last PROTO before the opcode that names it). `None` for names without dots.
pub fn dotted_note(name: &str, protocol: u8) -> Option<String> {
    if !name.contains('.') {
        return None;
    }
    Some(if protocol >= 4 {
        format!("a dotted name: at protocol {protocol} CPython's find_class walks it attribute by attribute, so it is judged by its most severe reading")
    } else {
        format!("a dotted name at protocol {protocol}: CPython's find_class imports the module and then looks the name up as one attribute, which fails and stops the load; it is still judged by its most severe reading, never as safe")
    })
}

/// Top-level modules of the Python standard library (`sys.stdlib_module_names`, CPython 3.11).
const STDLIB_MODULES: &[&str] = &[
    "__future__",
    "_abc",
    "_aix_support",
    "_ast",
    "_asyncio",
    "_bisect",
    "_blake2",
    "_bootsubprocess",
    "_bz2",
    "_codecs",
    "_codecs_cn",
    "_codecs_hk",
    "_codecs_iso2022",
    "_codecs_jp",
    "_codecs_kr",
    "_codecs_tw",
    "_collections",
    "_collections_abc",
    "_compat_pickle",
    "_compression",
    "_contextvars",
    "_crypt",
    "_csv",
    "_ctypes",
    "_curses",
    "_curses_panel",
    "_datetime",
    "_dbm",
    "_decimal",
    "_elementtree",
    "_frozen_importlib",
    "_frozen_importlib_external",
    "_functools",
    "_gdbm",
    "_hashlib",
    "_heapq",
    "_imp",
    "_io",
    "_json",
    "_locale",
    "_lsprof",
    "_lzma",
    "_markupbase",
    "_md5",
    "_msi",
    "_multibytecodec",
    "_multiprocessing",
    "_opcode",
    "_operator",
    "_osx_support",
    "_overlapped",
    "_pickle",
    "_posixshmem",
    "_posixsubprocess",
    "_py_abc",
    "_pydecimal",
    "_pyio",
    "_queue",
    "_random",
    "_scproxy",
    "_sha1",
    "_sha256",
    "_sha3",
    "_sha512",
    "_signal",
    "_sitebuiltins",
    "_socket",
    "_sqlite3",
    "_sre",
    "_ssl",
    "_stat",
    "_statistics",
    "_string",
    "_strptime",
    "_struct",
    "_symtable",
    "_thread",
    "_threading_local",
    "_tkinter",
    "_tokenize",
    "_tracemalloc",
    "_typing",
    "_uuid",
    "_warnings",
    "_weakref",
    "_weakrefset",
    "_winapi",
    "_zoneinfo",
    "abc",
    "aifc",
    "antigravity",
    "argparse",
    "array",
    "ast",
    "asynchat",
    "asyncio",
    "asyncore",
    "atexit",
    "audioop",
    "base64",
    "bdb",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "cProfile",
    "calendar",
    "cgi",
    "cgitb",
    "chunk",
    "cmath",
    "cmd",
    "code",
    "codecs",
    "codeop",
    "collections",
    "colorsys",
    "compileall",
    "concurrent",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "crypt",
    "csv",
    "ctypes",
    "curses",
    "dataclasses",
    "datetime",
    "dbm",
    "decimal",
    "difflib",
    "dis",
    "distutils",
    "doctest",
    "email",
    "encodings",
    "ensurepip",
    "enum",
    "errno",
    "faulthandler",
    "fcntl",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "genericpath",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "grp",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "idlelib",
    "imaplib",
    "imghdr",
    "imp",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "lib2to3",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "mailcap",
    "marshal",
    "math",
    "mimetypes",
    "mmap",
    "modulefinder",
    "msilib",
    "msvcrt",
    "multiprocessing",
    "netrc",
    "nis",
    "nntplib",
    "nt",
    "ntpath",
    "nturl2path",
    "numbers",
    "opcode",
    "operator",
    "optparse",
    "os",
    "ossaudiodev",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pipes",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "posix",
    "posixpath",
    "pprint",
    "profile",
    "pstats",
    "pty",
    "pwd",
    "py_compile",
    "pyclbr",
    "pydoc",
    "pydoc_data",
    "pyexpat",
    "queue",
    "quopri",
    "random",
    "re",
    "readline",
    "reprlib",
    "resource",
    "rlcompleter",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "site",
    "smtpd",
    "smtplib",
    "sndhdr",
    "socket",
    "socketserver",
    "spwd",
    "sqlite3",
    "sre_compile",
    "sre_constants",
    "sre_parse",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "sunau",
    "symtable",
    "sys",
    "sysconfig",
    "syslog",
    "tabnanny",
    "tarfile",
    "telnetlib",
    "tempfile",
    "termios",
    "textwrap",
    "this",
    "threading",
    "time",
    "timeit",
    "tkinter",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tracemalloc",
    "tty",
    "turtle",
    "turtledemo",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib",
    "uu",
    "uuid",
    "venv",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "winreg",
    "winsound",
    "wsgiref",
    "xdrlib",
    "xml",
    "xmlrpc",
    "zipapp",
    "zipfile",
    "zipimport",
    "zlib",
    "zoneinfo",
];

/// Whether a (normalized) module belongs to the standard library, whose capitalised callables
/// include `subprocess.Popen`, `logging.FileHandler`, `sqlite3.Connection`, `imaplib.IMAP4` ...
pub fn is_stdlib(module: &str) -> bool {
    let top = module.split('.').next().unwrap_or(module);
    STDLIB_MODULES.binary_search(&top).is_ok()
}

/// Whether a global's name reads as a class: every component is a CamelCase or CONSTANT_CASE
/// identifier (`IntervalStrategy`, `_MEM_FORMAT_ENCODING`, `Outer.Inner`), none a dunder.
pub fn is_class_like(name: &str) -> bool {
    name.split('.').all(|part| {
        let core = part.trim_start_matches('_');
        !is_dunder(part)
            && core.starts_with(|c: char| c.is_ascii_uppercase())
            && core.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Capitalised callables of the standard library (and of common libraries) that act on a single
/// short string: they run commands, load native code, open files or connections, start processes
/// or compile templates. Modules re-export them (`from subprocess import Popen`), so under any
/// module such a final name is never read as an Enum class.
const ACTING_CLASS_NAMES: &[&str] = &[
    "BaseManager",
    "BufferedRandom",
    "BufferedWriter",
    "CDLL",
    "Client",
    "Command",
    "Connection",
    "DatagramHandler",
    "DbfilenameShelf",
    "FTP",
    "FTP_TLS",
    "FileHandler",
    "FileIO",
    "Git",
    "HTTPConnection",
    "HTTPHandler",
    "HTTPSConnection",
    "HTTPServer",
    "IMAP4",
    "IMAP4_SSL",
    "InteractiveConsole",
    "InteractiveInterpreter",
    "LibraryLoader",
    "Listener",
    "Manager",
    "NNTP",
    "NamedTemporaryFile",
    "OleDLL",
    "POP3",
    "POP3_SSL",
    "Pdb",
    "Pool",
    "Popen",
    "PopenSpawn",
    "Process",
    "ProcessPoolExecutor",
    "PyDLL",
    "PyZipFile",
    "Repo",
    "RotatingFileHandler",
    "SMTP",
    "SMTPHandler",
    "SMTP_SSL",
    "SSHClient",
    "SharedMemory",
    "Shelf",
    "SocketHandler",
    "SpooledTemporaryFile",
    "SysLogHandler",
    "TCPServer",
    "TarFile",
    "Telnet",
    "Template",
    "TemporaryDirectory",
    "TemporaryFile",
    "TextIOWrapper",
    "Thread",
    "ThreadPoolExecutor",
    "ThreadingHTTPServer",
    "TimedRotatingFileHandler",
    "Timer",
    "UDPServer",
    "Unpickler",
    "WatchedFileHandler",
    "WinDLL",
    "ZipFile",
];

/// Whether the final component of a name is one of the acting class names (`Popen`, `CDLL`,
/// `FileHandler` ...) that no Enum-like reading may let through.
pub fn is_acting_class_name(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    ACTING_CLASS_NAMES.binary_search(&last).is_ok()
}

/// Known globals that take a callable and call it: while iterating (map, filter, the itertools
/// iterators; any consumer that iterates them, tuple/list/set/sorted/min/max/dict/bytes ...,
/// runs the call), at once (`iter(f, sentinel)`, `functools.reduce`), or later on demand
/// (`defaultdict`'s factory, `weakref.finalize`, `atexit.register`, properties). Returns the
/// positions of the callable arguments, given how many arguments the call has. For a known data
/// type (`defaultdict`) this is what makes its callable count as called; for any other callee
/// outside the allowlist a global argument counts as called anyway (see `scan::analyze`), and
/// the list adds the message and makes a computed callable there dangerous.
pub fn callable_args(module: &str, name: &str, nargs: usize) -> &'static [usize] {
    match (module, name) {
        // iter(iterable) only iterates; iter(callable, sentinel) calls.
        ("builtins", "iter") if nargs == 2 => &[0],
        ("builtins", "map" | "filter" | "classmethod" | "staticmethod") => &[0],
        ("builtins", "property") => &[0, 1, 2],
        ("itertools", "starmap" | "filterfalse" | "takewhile" | "dropwhile") => &[0],
        ("itertools", "groupby" | "accumulate") => &[1],
        ("functools", "reduce" | "cmp_to_key" | "cached_property" | "lru_cache" | "cache" | "singledispatch") => &[0],
        ("_functools", "reduce" | "cmp_to_key") => &[0],
        ("collections", "defaultdict") => &[0],
        ("weakref", "finalize" | "ref" | "proxy" | "WeakMethod") => &[1],
        ("atexit", "register") => &[0],
        ("contextlib", "contextmanager" | "closing") => &[0],
        _ => &[],
    }
}

/// Whether a callee of this category may call what it is given: anything outside the allowlist
/// and the known data types (a user class's `__new__`, a lazy iterator of the standard library,
/// an unknown function) may. Torch's allowlisted functions only store their arguments (the
/// trampoline `_rebuild_from_type_v2` is judged on its own), and the known data types build
/// plain values (`defaultdict` is in [`callable_args`]).
pub fn may_call_its_arguments(category: Category) -> bool {
    matches!(category, Category::Unknown | Category::Denylisted)
}

/// Helpers of TorchScript's C++ unpickler (torch/csrc/jit/serialization/unpickler.cpp readGlobal).
fn is_torchscript_helper(module: &str, name: &str) -> bool {
    module == "torch.jit._pickle"
        && matches!(
            name,
            "build_intlist"
                | "build_tensorlist"
                | "build_doublelist"
                | "build_boollist"
                | "build_tensor_from_id"
                | "restore_type_tag"
        )
}

/// Classifies a normalized global. `torchscript`: the pickle belongs to a TorchScript archive,
/// which torch reads with its C++ unpickler, where `__torch__.*` names are the archive's own
/// compiled classes.
pub fn classify(module: &str, name: &str, torchscript: bool) -> (Category, &'static str) {
    if is_allowed(module, name) {
        return (Category::Allowed, "in torch's weights_only allowlist");
    }
    if torchscript && (module == "__torch__" || module.starts_with("__torch__.")) {
        return (
            Category::Archive,
            "a TorchScript class compiled from the archive's code/",
        );
    }
    if torchscript && is_torchscript_helper(module, name) {
        // What TorchScript's C++ unpickler does with these is build a list or restore a type
        // tag; inside a TorchScript archive they are as harmless as the allowlist.
        return (
            Category::Allowed,
            "a helper of TorchScript's C++ unpickler (allowed inside TorchScript archives)",
        );
    }
    if module == "copyreg" && matches!(name, "_reconstructor" | "__newobj__" | "__newobj_ex__") {
        return (
            Category::Reconstructor,
            "instantiates the class it is given (pickle protocol 0/1 objects)",
        );
    }
    if module == "torch.storage" && name == "_load_from_bytes" {
        return (
            Category::NestedLoader,
            "runs torch.load(weights_only=False) on bytes embedded in the pickle",
        );
    }
    if is_known_data(module, name) {
        return (Category::KnownData, "a plain data type outside torch's allowlist");
    }
    if let Some(why) = denylisted(module, name) {
        return (Category::Denylisted, why);
    }
    (Category::Unknown, "not in torch's weights_only allowlist")
}

/// What a use of a global means, by category (see the module docs of `scan`).
pub fn judge(category: Category, called: bool) -> Verdict {
    match category {
        Category::Allowed => Verdict::Safe,
        Category::Denylisted => Verdict::Dangerous,
        Category::Unknown if called => Verdict::Dangerous,
        // Referenced, instantiated or given state: loading imports the module and runs the
        // class's own code (__new__, __setstate__), nothing the pickle chose to call.
        Category::Unknown => Verdict::NeedsCode,
        // TorchScript's C++ unpickler resolves `__torch__.*` to the archive's compiled types
        // (a REDUCE of one builds an enum value); it cannot reach Python. What runs is the
        // archive's code, which makes it needs-code already.
        Category::Archive => Verdict::NeedsCode,
        Category::KnownData | Category::Reconstructor | Category::NestedLoader => Verdict::NeedsCode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_torch() {
        assert!(is_allowed("torch._utils", "_rebuild_tensor_v2"));
        assert!(is_allowed("collections", "OrderedDict"));
        assert!(is_allowed("torch", "FloatStorage"));
        assert!(is_allowed("torch", "QUInt8Storage"));
        assert!(!is_allowed("torch.cuda", "QUInt8Storage"));
        assert!(is_allowed("torch.storage", "UntypedStorage"));
        assert!(is_allowed("torch", "float8_e4m3fn"));
        assert!(is_allowed("torch", "uint7"));
        assert!(!is_allowed("torch", "load"));
        assert!(!is_allowed("torch.sparse", "BoolTensor"));
        assert!(!is_allowed("builtins", "eval"));
        assert_eq!(normalize("__builtin__", "set"), ("builtins".into(), "set".into()));
        assert_eq!(normalize("__builtin__", "intern"), ("sys".into(), "intern".into()));
    }

    #[test]
    fn denylist_matches_on_dots_and_walks() {
        assert!(denylisted("os", "system").is_some());
        assert!(denylisted("osx", "system").is_none());
        assert!(denylisted("builtins", "eval").is_some());
        assert!(denylisted("builtins", "evaluate").is_none());
        assert!(denylisted("torch", "serialization.os.system").is_some());
        assert!(denylisted("torch", "nn.Module.__init__.__globals__").is_some());
        assert!(denylisted("mylib", "Outer.Inner").is_none());
        // Every suffix of the walked name is a reading; the module's own path is not walked.
        assert!(denylisted("torch.serialization", "os.system").is_some());
        assert!(denylisted("torch", "serialization.os").is_some());
        assert!(denylisted("builtins", "getattr.__self__").is_some());
        assert!(denylisted("builtins", "getattr.x").is_some());
        assert!(denylisted("mylib.io", "Reader").is_none());
        assert!(denylisted("collections", "OrderedDict.fromkeys").is_none());
        assert_eq!(
            classify("collections", "OrderedDict.fromkeys", false).0,
            Category::Unknown
        );
        assert!(denylisted("torch.jit._pickle", "build_intlist").is_some());
        assert_eq!(
            classify("torch.jit._pickle", "build_intlist", true).0,
            Category::Allowed
        );
        assert_eq!(
            classify("torch.jit._pickle", "build_intlist", false).0,
            Category::Denylisted
        );
    }

    #[test]
    fn class_likeness_and_the_standard_library() {
        for name in ["IntervalStrategy", "_MEM_FORMAT_ENCODING", "Outer.Inner", "HTTPStatus"] {
            assert!(is_class_like(name), "{name}");
        }
        for name in [
            "system",
            "Popen.__init__",
            "os.system",
            "__Foo__",
            "Foo.bar",
            "Foo-Bar",
            "",
        ] {
            assert!(!is_class_like(name), "{name}");
        }
        assert!(is_stdlib("logging.handlers") && is_stdlib("subprocess") && is_stdlib("sqlite3"));
        assert!(!is_stdlib("transformers.trainer_utils") && !is_stdlib("__main__") && !is_stdlib("torch"));
        assert!(
            STDLIB_MODULES.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
        assert_eq!(callable_args("builtins", "map", 2), [0]);
        assert_eq!(callable_args("builtins", "iter", 2), [0]);
        assert!(callable_args("builtins", "iter", 1).is_empty());
        assert!(callable_args("builtins", "tuple", 1).is_empty());
    }
}
