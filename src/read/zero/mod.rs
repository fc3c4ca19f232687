//! DeepSpeed ZeRO checkpoints (`engine.save_checkpoint`): a tag folder (`global_step10/`) of
//! per-rank `torch.save` files, read as the fp32 state dict DeepSpeed's `zero_to_fp32.py`
//! (`get_fp32_state_dict_from_zero_checkpoint`) recovers from them: rank 0's buffers (floating
//! ones as float32), the frozen parameters from the model-states files ([`frozen`]), every
//! trainable parameter assembled from the ranks' flat fp32 partitions ([`layout`]), then the
//! tied names (`shared_params`) as the same tensors. Nothing is read until a command streams a
//! tensor, and then a bounded block at a time.

pub mod files;
pub mod frozen;
pub mod layout;
pub mod states;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::assembly::{Assembly, Piece};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Cast, Checkpoint, DataRef, Format, Globals, Key, Node, Origin, Storage, StorageId, Tensor};
use crate::read::dcp::contiguous_strides;
use crate::read::{pth_zip, ReadLimits};
use crate::source::Source;

pub use files::{has_latest, has_rank_files};

/// Reads the checkpoint in `dir`: a tag folder, or the folder whose `latest` file names one.
pub fn read(dir: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let tag = files::tag_dir(dir)?;
    let model_files = files::model_states(&tag)?;
    let optim_files = files::optim_states(&tag)?;
    let mut globals = Globals::default();
    let mut open = |path: &Path| -> Result<Checkpoint> {
        let ckpt = pth_zip::read(Source::open(path)?, limits)?;
        globals.merge(&ckpt.globals);
        Ok(ckpt)
    };
    // Every rank's model states, as zero_to_fp32 loads them; rank 0's name the tensors.
    let mut model_ckpts = Vec::with_capacity(model_files.len());
    for path in &model_files {
        model_ckpts.push(open(path)?);
    }
    let models = model_files
        .iter()
        .zip(&model_ckpts)
        .map(|(path, ckpt)| states::model_states(path, ckpt))
        .collect::<Result<Vec<_>>>()?;
    let (model_ckpt, model) = (&model_ckpts[0], &models[0]);
    let mut optim = Vec::with_capacity(optim_files.len());
    for path in &optim_files {
        optim.push(states::optim_states(path, &open(path)?)?);
    }
    let first = &optim[0];
    let world = first.partition_count;
    if world != optim_files.len() as u64 {
        return Err(Error::malformed(
            &tag,
            "files",
            format!(
                "{} says the checkpoint was saved by {world} ranks but the folder holds {} *_optim_states.pt file(s): a rank's file is missing or left from another save",
                optim_files[0].display(),
                optim_files.len()
            ),
        ));
    }
    if let Some((path, _)) = optim_files.iter().zip(&optim).find(|(_, o)| o.stage != first.stage) {
        return Err(Error::malformed(
            path,
            "optimizer_state_dict",
            format!("saved by another ZeRO stage than {}", optim_files[0].display()),
        ));
    }
    let partitions: Vec<Vec<DataRef>> = optim.iter().map(|o| o.partitions.clone()).collect();
    let params = layout::params(
        first.stage,
        &model.param_shapes,
        first.alignment_paddings.as_deref(),
        &partitions,
    )
    .map_err(|why| Error::malformed(&tag, "fp32 partitions", why))?;

    let named: Vec<_> = model_files
        .iter()
        .zip(&model_ckpts)
        .zip(&models)
        .map(|((path, ckpt), states)| (file_name(path), ckpt, states))
        .collect();
    let frozen = frozen::frozen(first.stage, &named).map_err(|why| Error::malformed(&tag, "frozen parameters", why))?;

    let mut out = StateDict::default();
    for (name, idx) in &model.buffers {
        out.buffer(&model_files[0], model_ckpt, name, *idx)?;
    }
    for f in frozen {
        let what = format!("frozen parameter '{}'", f.name);
        let data = flat(&tag, &what, &model_files[0], &f.shape, f.dtype, f.pieces)?;
        out.insert(f.name, f.dtype, f.shape, data, None);
    }
    for p in params {
        let what = format!("parameter '{}'", p.name);
        let data = flat(&tag, &what, &optim_files[0], &p.shape, DType::F32, p.pieces)?;
        out.insert(p.name, DType::F32, p.shape, data, None);
    }
    for (alias, name) in &model.shared {
        out.tie(alias, name);
    }
    let mut files = model_files;
    files.extend(optim_files);
    Ok(out.finish(files, globals))
}

/// The bytes of a parameter of `shape` whose elements, flattened, the 1-D `pieces` tile;
/// `source` stands for them in messages.
fn flat(tag: &Path, what: &str, source: &Path, shape: &[u64], dtype: DType, pieces: Vec<Piece>) -> Result<DataRef> {
    let assembly = Assembly::new(vec![shape.iter().product()], dtype.size() as u64, pieces)
        .map_err(|why| Error::malformed(tag, what, why))?;
    let len = assembly.nbytes();
    Ok(DataRef {
        source: Source::assembled(source, assembly),
        offset: 0,
        len,
    })
}

/// The state dict being built, in `zero_to_fp32.py`'s order: assigning a name again keeps its
/// place, as a Python dict does.
#[derive(Default)]
struct StateDict {
    tensors: Vec<Tensor>,
    storages: Vec<Storage>,
    /// Position in `tensors` by name.
    by_name: HashMap<String, usize>,
}

impl StateDict {
    fn place(&mut self, tensor: Tensor) {
        match self.by_name.get(&tensor.name) {
            Some(&i) => self.tensors[i] = tensor,
            None => {
                self.by_name.insert(tensor.name.clone(), self.tensors.len());
                self.tensors.push(tensor);
            }
        }
    }

    fn insert(&mut self, name: String, dtype: DType, shape: Vec<u64>, data: DataRef, cast: Option<Cast>) {
        self.storages.push(Storage {
            key: None,
            location: "cpu".into(),
            byte_order: ByteOrder::Little,
            data,
            cast,
        });
        let stride = contiguous_strides(&shape);
        self.place(Tensor {
            name,
            dtype,
            shape,
            stride,
            offset: 0,
            storage: StorageId(self.storages.len() - 1),
            requires_grad: false,
            parameter: false,
        });
    }

    /// A buffer of the model-states file, its bytes where they are; a floating buffer that is
    /// not float32 is cast to it while streamed (`zero_to_fp32.py` calls `.float()`).
    fn buffer(&mut self, path: &Path, ckpt: &Checkpoint, name: &str, idx: usize) -> Result<()> {
        let t = &ckpt.tensors[idx];
        let data = states::tensor_bytes(ckpt, idx)
            .map_err(|why| Error::malformed(path, format!("module.{name}"), why))?;
        let (dtype, cast) = match t.dtype {
            d if d.is_floating() && d != DType::F32 => (DType::F32, Some(Cast { from: d, to: DType::F32 })),
            d => (d, None),
        };
        self.insert(name.to_string(), dtype, t.shape.clone(), data, cast);
        Ok(())
    }

    /// `state_dict[alias] = state_dict[name]` when `name` is in it: the same tensor.
    fn tie(&mut self, alias: &str, name: &str) {
        if let Some(&i) = self.by_name.get(name) {
            let tensor = Tensor {
                name: alias.to_string(),
                ..self.tensors[i].clone()
            };
            self.place(tensor);
        }
    }

    fn finish(self, files: Vec<PathBuf>, globals: Globals) -> Checkpoint {
        let items = (0..self.tensors.len())
            .map(|i| (Key::Str(self.tensors[i].name.clone()), Node::Tensor(i)))
            .collect();
        Checkpoint {
            format: Format::Zero,
            root: Node::Dict { ordered: true, items },
            tensors: self.tensors,
            storages: self.storages,
            metadata: Default::default(),
            globals,
            origin: Origin::Data,
            files,
            module_classes: Default::default(),
            modules: Vec::new(),
            names: Default::default(),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}
