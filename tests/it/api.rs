//! The library API (`ckpt::open`, `Checkpoint::tensor`, `TensorRef`) against what PyTorch
//! computed when it wrote the fixtures (expected.json) and the values fixtures/generate.py gave
//! the tensors.

use half::{bf16, f16};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::common::{expected, fixtures_dir};
use ckpt::{Checkpoint, DType, Element, Error, TensorRef};

fn open(rel: &str) -> Checkpoint {
    ckpt::open(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every fixture with its expected tensors, the index files of sharded ones included.
fn fixtures() -> Vec<(String, Vec<Json>)> {
    let all = expected();
    let map = all["fixtures"].as_object().expect("fixtures object");
    map.iter()
        .map(|(rel, want)| (rel.clone(), want["tensors"].as_array().expect("tensors").clone()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Little-endian bytes of decoded values, to hash them as expected.json hashed torch's.
trait LeBytes {
    fn le(&self, out: &mut Vec<u8>);
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(f64, f32, f16, bf16, i8, i16, i32, i64, u8, u16, u32, u64);

impl LeBytes for bool {
    fn le(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

fn reencoded<T: Element + LeBytes>(t: TensorRef<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in t.to_vec::<T>().unwrap_or_else(|e| panic!("{}: {e}", t.name())) {
        v.le(&mut out);
    }
    out
}

/// The tensor's values through `to_vec` of its Rust type, back as bytes; None for dtypes
/// without one (float8, complex).
fn values_as_bytes(t: TensorRef<'_>) -> Option<Vec<u8>> {
    Some(match t.dtype() {
        DType::F64 => reencoded::<f64>(t),
        DType::F32 => reencoded::<f32>(t),
        DType::F16 => reencoded::<f16>(t),
        DType::BF16 => reencoded::<bf16>(t),
        DType::I8 => reencoded::<i8>(t),
        DType::I16 => reencoded::<i16>(t),
        DType::I32 => reencoded::<i32>(t),
        DType::I64 => reencoded::<i64>(t),
        DType::U8 => reencoded::<u8>(t),
        DType::U16 => reencoded::<u16>(t),
        DType::U32 => reencoded::<u32>(t),
        DType::U64 => reencoded::<u64>(t),
        DType::Bool => reencoded::<bool>(t),
        _ => return None,
    })
}

#[test]
fn tensors_iterate_in_file_order_with_torch_layout() {
    for (rel, want) in fixtures() {
        let ckpt = open(&rel);
        assert_eq!(ckpt.len(), want.len(), "{rel}");
        for (t, w) in ckpt.tensors().zip(&want) {
            let at = format!("{rel}: {}", t.name());
            assert_eq!(t.name(), w["name"], "{rel}: order");
            assert_eq!(t.dtype().name(), w["dtype"], "{at}");
            assert_eq!(Json::from(t.shape()), w["shape"], "{at}");
            assert_eq!(Json::from(t.strides()), w["stride"], "{at}");
            // safetensors has no storages, so torch's offset there is not recorded.
            if !w["storage_offset"].is_null() {
                assert_eq!(t.storage_offset(), w["storage_offset"], "{at}");
            }
            assert_eq!(t.device(), w["device"], "{at}");
            assert_eq!(t.requires_grad(), w["requires_grad"], "{at}");
            assert_eq!(t.is_parameter(), w["parameter"], "{at}");
            assert_eq!(t.nbytes(), w["nbytes"], "{at}");
        }
    }
}

#[test]
fn every_name_is_found_and_others_are_not() {
    for (rel, want) in fixtures() {
        let ckpt = open(&rel);
        for w in &want {
            let name = w["name"].as_str().expect("name");
            let t = ckpt.tensor(name).unwrap_or_else(|| panic!("{rel}: {name} not found"));
            assert_eq!(t.name(), name);
            assert_eq!(Json::from(t.shape()), w["shape"], "{rel}: {name}");
        }
        assert!(ckpt.tensor("no such tensor").is_none(), "{rel}");
        assert!(ckpt.tensor("").is_none(), "{rel}");
    }
}

#[test]
fn lookup_follows_changes_to_the_tensor_list() {
    let mut ckpt = open("cnn_state_dict.pth");
    assert!(ckpt.tensor("fc3.bias").is_some(), "builds the index");
    let i = ckpt.tensors.iter().position(|t| t.name == "fc3.bias").unwrap();
    ckpt.tensors[i].name = "head.bias".into();
    assert!(
        ckpt.tensor("fc3.bias").is_none(),
        "a renamed tensor is not found by its old name"
    );
    assert_eq!(ckpt.tensor("head.bias").map(|t| t.numel()), Some(10));
    ckpt.tensors.remove(0);
    assert_eq!(ckpt.tensor("head.bias").map(|t| t.numel()), Some(10), "positions moved");
}

/// Every element of every tensor that has a Rust type decodes to the values PyTorch saved:
/// their bytes hash to expected.json's SHA-256 of `t.contiguous()`.
#[test]
fn to_vec_gives_torchs_values_for_every_dtype() {
    let mut dtypes = std::collections::BTreeSet::new();
    for (rel, want) in fixtures() {
        let ckpt = open(&rel);
        for (t, w) in ckpt.tensors().zip(&want) {
            if let Some(bytes) = values_as_bytes(t) {
                assert_eq!(hex(&bytes), w["sha256"], "{rel}: {}", t.name());
                dtypes.insert(t.dtype());
            }
        }
    }
    let with_rust_type = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];
    assert_eq!(
        dtypes,
        with_rust_type.into_iter().collect(),
        "fixtures hold every dtype"
    );
}

#[test]
fn bytes_are_torchs_contiguous_bytes() {
    for rel in ["views.pth", "bigendian.pth", "dtypes.pth", "model.safetensors"] {
        let ckpt = open(rel);
        let want = &expected()["fixtures"][rel]["tensors"];
        for (t, w) in ckpt.tensors().zip(want.as_array().unwrap()) {
            let bytes = t.read_bytes().unwrap();
            assert_eq!(hex(&bytes), w["sha256"], "{rel}: {}", t.name());
            let mut streamed = Vec::new();
            assert_eq!(t.write_bytes_to(&mut streamed).unwrap(), bytes.len() as u64);
            assert_eq!(streamed, bytes, "{rel}: {}", t.name());
        }
    }
}

/// A writer that refuses everything, to see the error it causes.
struct Refusing;

impl std::io::Write for Refusing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_is_an_output_error_naming_the_tensor() {
    let ckpt = open("cnn_state_dict.pth");
    let e = ckpt
        .tensor("fc3.bias")
        .unwrap()
        .write_bytes_to(&mut Refusing)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Output { tensor, .. } if tensor == "fc3.bias"),
        "{e:?}"
    );
}

/// `base = torch.arange(24.).reshape(4, 6)` in fixtures/generate.py; views of it keep its
/// storage, so reading them exercises strides and offsets.
fn base(r: usize, c: usize) -> f32 {
    (r * 6 + c) as f32
}

#[test]
fn views_give_the_values_torch_indexes() {
    let ckpt = open("views.pth");
    let f = |name: &str| ckpt.tensor(name).unwrap().to_vec::<f32>().unwrap();
    let transposed: Vec<f32> = (0..6).flat_map(|c| (0..4).map(move |r| base(r, c))).collect();
    assert_eq!(f("transposed"), transposed);
    assert_eq!(f("base"), (0..24).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(f("rows_1_3"), (6..18).map(|i| i as f32).collect::<Vec<_>>());
    let stepped: Vec<f32> = (0..4).flat_map(|r| [0, 2, 4].map(|c| base(r, c))).collect();
    assert_eq!(f("stepped"), stepped);
    assert_eq!(f("row2_tail"), [15.0, 16.0, 17.0]);
    assert_eq!(f("diagonal"), [0.0, 7.0, 14.0, 21.0]);
    // base.t()[1:, 2:]: rows are base's columns 1.., columns base's rows 2..
    let t_slice: Vec<f32> = (1..6).flat_map(|c| (2..4).map(move |r| base(r, c))).collect();
    assert_eq!(f("t_slice"), t_slice);
    // as_strided((5, 4), (2, 1), 3) of the flat base
    let overlapping: Vec<f32> = (0..5)
        .flat_map(|i| (0..4).map(move |j| (3 + 2 * i + j) as f32))
        .collect();
    assert_eq!(f("overlapping"), overlapping);
    assert_eq!(f("scalar"), [3.5]);
    assert!(f("empty_view").is_empty());
    let ints = |name: &str| ckpt.tensor(name).unwrap().to_vec::<i64>().unwrap();
    assert_eq!(ints("ints_t"), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
    assert_eq!(ints("ints_col"), [1, 5, 9]);
    assert_eq!(ints("int_scalar"), [-7]);
}

#[test]
fn big_endian_files_give_the_values_torch_loads() {
    let ckpt = open("bigendian.pth");
    let t = |name: &str| ckpt.tensor(name).unwrap();
    assert_eq!(t("int16").to_vec::<i16>().unwrap(), [1, -2, 300, -32768, 32767]);
    assert_eq!(t("int32").to_vec::<i32>().unwrap(), [1, -2, 70000, i32::MIN]);
    assert_eq!(t("int64").to_vec::<i64>().unwrap(), [1, -2, 1 << 40, -(1 << 62)]);
    assert_eq!(t("uint8").to_vec::<u8>().unwrap(), [1, 2, 250]);
    assert_eq!(t("int8").to_vec::<i8>().unwrap(), [1, -2, 100]);
    assert_eq!(t("bool").to_vec::<bool>().unwrap(), [true, false, true]);
    assert_eq!(t("scalar").to_vec::<f64>().unwrap(), [-2.5]);
    // float32_t is float32's transpose, float32_row its row 1
    let m = t("float32").to_vec::<f32>().unwrap();
    let mt: Vec<f32> = (0..4)
        .flat_map(|c| (0..3).map(|r| m[r * 4 + c]).collect::<Vec<_>>())
        .collect();
    assert_eq!(t("float32_t").to_vec::<f32>().unwrap(), mt);
    assert_eq!(t("float32_row").to_vec::<f32>().unwrap(), m[4..8]);
}

#[test]
fn asking_for_another_type_is_a_dtype_mismatch() {
    let ckpt = open("dtypes.pth");
    let e = ckpt.tensor("float16").unwrap().to_vec::<f32>().unwrap_err();
    match e {
        Error::DTypeMismatch {
            tensor,
            expected,
            found,
        } => assert_eq!((tensor.as_str(), expected, found), ("float16", DType::F32, DType::F16)),
        other => panic!("{other:?}"),
    }
    let e = ckpt.tensor("bfloat16").unwrap().to_vec::<f16>().unwrap_err();
    assert_eq!(e.to_string(), "tensor 'bfloat16' is bfloat16, not float16");
}

#[test]
fn open_with_applies_the_limits() {
    let path = fixtures_dir().join("cnn_state_dict.pth");
    let mut limits = ckpt::ReadLimits::default();
    assert!(ckpt::open_with(&path, &limits).is_ok());
    limits.max_pickle_bytes = 16;
    assert!(ckpt::open_with(&path, &limits).is_err());
}

#[cfg(feature = "ndarray")]
mod arrays {
    use ndarray::{ArrayD, IxDyn};

    use super::{base, open};

    #[test]
    fn arrays_have_torchs_shape_and_values() {
        let ckpt = open("views.pth");
        for t in ckpt.tensors() {
            let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
            match t.dtype() {
                ckpt::DType::F32 => {
                    let a = t.to_ndarray::<f32>().unwrap();
                    assert_eq!(a.shape(), shape, "{}", t.name());
                    assert_eq!(a.iter().copied().collect::<Vec<_>>(), t.to_vec::<f32>().unwrap());
                }
                ckpt::DType::I64 => assert_eq!(t.to_ndarray::<i64>().unwrap().shape(), shape),
                other => panic!("views.pth has no {other} tensor"),
            }
        }
        let transposed = ckpt.tensor("transposed").unwrap().to_ndarray::<f32>().unwrap();
        let want = ArrayD::from_shape_fn(IxDyn(&[6, 4]), |i| base(i[1], i[0]));
        assert_eq!(transposed, want);
    }

    #[test]
    fn views_in_place_keep_torchs_strides() {
        let ckpt = open("views.pth");
        for t in ckpt.tensors().filter(|t| t.dtype() == ckpt::DType::F32) {
            // A zip record of a .pth is 64-byte aligned, so every f32 view can be used in place.
            let view = t.view_ndarray::<f32>().unwrap().expect("aligned little-endian f32");
            let strides: Vec<isize> = t.strides().iter().map(|&s| s as isize).collect();
            if t.numel() > 1 {
                assert_eq!(view.strides(), strides, "{}", t.name());
            }
            assert_eq!(view, t.to_ndarray::<f32>().unwrap(), "{}", t.name());
        }
        let diagonal = ckpt.tensor("diagonal").unwrap().view_ndarray::<f32>().unwrap().unwrap();
        assert_eq!(diagonal.iter().copied().collect::<Vec<_>>(), [0.0, 7.0, 14.0, 21.0]);
    }

    #[test]
    fn big_endian_bytes_are_not_viewed_in_place() {
        let ckpt = open("bigendian.pth");
        let t = ckpt.tensor("int32").unwrap();
        assert!(t.view_ndarray::<i32>().unwrap().is_none());
        assert_eq!(
            t.to_ndarray::<i32>().unwrap().into_raw_vec_and_offset().0,
            [1, -2, 70000, i32::MIN]
        );
    }

    #[test]
    fn a_view_of_another_type_is_a_dtype_mismatch() {
        let ckpt = open("views.pth");
        let e = ckpt.tensor("base").unwrap().view_ndarray::<i32>().unwrap_err();
        assert!(matches!(e, ckpt::Error::DTypeMismatch { .. }), "{e:?}");
    }
}

mod built {
    use half::bf16;

    use ckpt::{write, CheckpointBuilder, DType, Error, OutFormat, WriteOptions};

    fn sample() -> ckpt::Checkpoint {
        CheckpointBuilder::new()
            .tensor("w", &[1.5f32, -2.0, 0.25, 8.0, -0.0, 3.0], &[2, 3])
            .unwrap()
            .tensor("steps", &[7i64], &[])
            .unwrap()
            .tensor("mask", &[true, false], &[2])
            .unwrap()
            .tensor("h", &[bf16::from_f32(0.5), bf16::from_f32(-3.0)], &[2, 1])
            .unwrap()
            .tensor("none", &[] as &[u8], &[0, 4])
            .unwrap()
            .build()
    }

    #[test]
    fn built_tensors_read_back_as_given() {
        let ckpt = sample();
        let names: Vec<&str> = ckpt.tensors().map(|t| t.name()).collect();
        assert_eq!(names, ["w", "steps", "mask", "h", "none"]);
        let w = ckpt.tensor("w").unwrap();
        assert_eq!(
            (w.dtype(), w.shape(), w.strides()),
            (DType::F32, &[2, 3][..], &[3, 1][..])
        );
        assert_eq!(w.to_vec::<f32>().unwrap(), [1.5, -2.0, 0.25, 8.0, -0.0, 3.0]);
        assert_eq!(ckpt.tensor("steps").unwrap().to_vec::<i64>().unwrap(), [7]);
        assert_eq!(ckpt.tensor("mask").unwrap().to_vec::<bool>().unwrap(), [true, false]);
        assert_eq!(ckpt.tensor("none").unwrap().strides(), [4, 1]);
        assert_eq!(ckpt.tensor("w").unwrap().device(), "cpu");
    }

    #[test]
    fn written_files_read_back_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = sample();
        for (file, format) in [("b.pth", OutFormat::Pth), ("b.safetensors", OutFormat::Safetensors)] {
            let out = dir.path().join(file);
            write(&ckpt, &out, &WriteOptions::new(format)).unwrap();
            let back = ckpt::open(&out).unwrap();
            let got: Vec<(String, Vec<u8>)> = back
                .tensors()
                .map(|t| (t.name().into(), t.read_bytes().unwrap()))
                .collect();
            let want: Vec<(String, Vec<u8>)> = ckpt
                .tensors()
                .map(|t| (t.name().into(), t.read_bytes().unwrap()))
                .collect();
            if format == OutFormat::Pth {
                assert_eq!(got, want, "{file}");
            } else {
                // safetensors lays tensors out in an order of its own: compare them by name.
                assert_eq!(got.len(), want.len());
                for (name, bytes) in &want {
                    assert_eq!(
                        back.tensor(name).unwrap().read_bytes().unwrap(),
                        *bytes,
                        "{file}: {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_second_tensor_of_a_name_is_refused() {
        let e = CheckpointBuilder::new()
            .tensor("a", &[1u8], &[1])
            .unwrap()
            .tensor("a", &[2u8], &[1])
            .unwrap_err();
        assert!(matches!(&e, Error::DuplicateName { tensor } if tensor == "a"), "{e:?}");
    }

    #[test]
    fn data_that_does_not_fill_the_shape_is_refused() {
        let e = CheckpointBuilder::new().tensor("a", &[1.0f64; 5], &[2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 'a': shape [2, 3] holds 6 elements but 5 were given"
        );
        let huge = CheckpointBuilder::new()
            .tensor("b", &[0i8], &[u64::MAX, 2])
            .unwrap_err();
        assert!(matches!(huge, Error::ShapeMismatch { .. }), "{huge:?}");
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn arrays_are_added_in_logical_order() {
        let a = ndarray::Array::from_shape_vec((2, 3), vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let ckpt = CheckpointBuilder::new().array("t", &a.t()).unwrap().build();
        let t = ckpt.tensor("t").unwrap();
        assert_eq!(t.shape(), [3, 2]);
        assert_eq!(t.to_vec::<i32>().unwrap(), [1, 4, 2, 5, 3, 6]);
        assert_eq!(t.to_ndarray::<i32>().unwrap(), a.t().into_dyn());
    }
}

/// The README's library example is the crate documentation's, which runs as a doctest.
#[test]
fn readme_library_example_is_the_doctest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme.split("## Library").nth(1).expect("a Library section");
    let in_readme = section.split("```rust\n").nth(1).unwrap().split("```").next().unwrap();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let docs: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let in_docs = docs.split("# Library").nth(1).unwrap().split("```\n").nth(1).unwrap();
    assert_eq!(in_readme, in_docs);
}
