//! `ckpt inspect`: what is in a checkpoint, as JSON for tools or a summary for people.
//! Without `hash`, nothing here reads tensor data.

mod sharding;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;

use serde_json::{json, Value as Json};

use crate::model::{Checkpoint, Format, Origin, Tensor};
use crate::module_view;
use crate::pass;
use crate::tensor_data::sha256_hex;
use crate::transform::params::{census, counted_parameters, Census, Count};
pub use crate::units::{grouped, human_bytes};
use crate::write::progress::OnProgress;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    pub hash: bool,
    /// Only tensors and metadata whose names match; None shows all.
    pub filter: Option<crate::transform::Pattern>,
    /// Where the progress of `hash` reading the data is reported (nowhere by default).
    pub on_progress: OnProgress,
    /// Show the module tree of a whole model (`--modules`) instead of the tensors.
    pub modules: bool,
    /// Levels of modules shown below the model (`--depth`); None shows all.
    pub depth: Option<usize>,
}

/// Each tensor's SHA-256 when `hash` is asked (None otherwise), reporting progress: hashing
/// reads every byte of the file.
fn hashes(ckpt: &Checkpoint, tensors: &[&Tensor], opts: &InspectOptions) -> Vec<Option<String>> {
    if !opts.hash {
        return vec![None; tensors.len()];
    }
    let total = tensors.iter().map(|t| t.nbytes()).sum();
    let progress = Mutex::new(opts.on_progress.start("hashing", total));
    // On all cores, a tensor per core at a time; progress counts finished tensors.
    let out = pass::map(tensors, |t| t.nbytes(), pass::threads(), |t| {
        let h = sha256_hex(ckpt, t);
        progress.lock().unwrap_or_else(|e| e.into_inner()).add(t.nbytes());
        Some(h)
    });
    progress.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
    out
}

fn selected_metadata<'a>(
    ckpt: &'a Checkpoint,
    opts: &'a InspectOptions,
) -> impl Iterator<Item = (&'a String, &'a Json)> {
    ckpt.metadata
        .iter()
        .filter(move |(k, _)| opts.filter.as_ref().is_none_or(|m| m.matches(k)))
}

fn selected<'a>(ckpt: &'a Checkpoint, opts: &'a InspectOptions) -> impl Iterator<Item = &'a Tensor> {
    ckpt.tensors
        .iter()
        .filter(move |t| opts.filter.as_ref().is_none_or(|p| p.matches(&t.name)))
}

/// The storage id `--json` shows: shared by tensors that share a storage; null where the
/// format has no storages (safetensors).
fn storage_id(ckpt: &Checkpoint, t: &Tensor) -> Json {
    match ckpt.storage(t.storage).key {
        Some(_) => json!(t.storage.0),
        None => Json::Null,
    }
}

fn counts_json(c: &Census) -> Json {
    let count = |c: &Count| json!({"tensors": c.tensors, "elements": c.elements});
    json!({
        "flags": if c.flags { "file" } else { "none" },
        "parameters": count(&c.parameters),
        "tied": c.tied,
        "buffers": count(&c.buffers),
        "training_state": count(&c.training_state),
        "other": count(&c.other),
    })
}

/// The `params` line and the lines of the other kinds of tensors (those that hold any).
fn count_lines(c: &Census) -> String {
    let mut out = String::new();
    let mut how = vec![if c.flags {
        "as model.parameters() counts them".to_string()
    } else {
        "recognised by dtype and name: the file saves no parameter flags".to_string()
    }];
    if c.tied > 0 {
        how.push(format!(
            "{} tied name{} counted once",
            c.tied,
            if c.tied == 1 { "" } else { "s" }
        ));
    }
    let _ = writeln!(out, "params    {} ({})", grouped(c.parameters.elements), how.join("; "));
    for (label, count, what) in [
        ("buffers", &c.buffers, "module buffers"),
        ("optim", &c.training_state, "optimizer, scheduler and scaler state"),
        ("other", &c.other, "other tensors"),
    ] {
        if count.tensors > 0 {
            let _ = writeln!(
                out,
                "{label:<10}{} in {} tensors ({what})",
                grouped(count.elements),
                count.tensors
            );
        }
    }
    out
}

pub fn to_json(ckpt: &Checkpoint, path: &str, opts: &InspectOptions) -> Json {
    let chosen: Vec<&Tensor> = selected(ckpt, opts).collect();
    let counts = census(ckpt, chosen.iter().copied());
    let tensors_json: Vec<Json> = chosen
        .iter()
        .zip(hashes(ckpt, &chosen, opts))
        .map(|(t, hash)| {
            let mut o = json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "device": ckpt.storage(t.storage).location,
                "requires_grad": t.requires_grad,
                "parameter": t.parameter,
                "nbytes": t.nbytes(),
                "storage": storage_id(ckpt, t),
            });
            if let Some(h) = hash {
                o["sha256"] = json!(h);
            }
            if let Some(chunks) = sharding::chunks_json(ckpt, t) {
                o["chunks"] = chunks;
            }
            o
        })
        .collect();
    let mut out = json!({
        "path": path,
        "format": ckpt.format.name(),
        "tensors": tensors_json,
        "metadata": selected_metadata(ckpt, opts)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>(),
        "globals": ckpt.globals,
        "total_params": counts.parameters.elements,
        "total_elements": selected(ckpt, opts).map(Tensor::numel).sum::<u64>(),
        "counts": counts_json(&counts),
        "total_bytes": selected(ckpt, opts).map(Tensor::nbytes).sum::<u64>(),
        "dropout": module_view::dropout_json(ckpt),
    });
    if opts.modules {
        let (modules, repeats) = module_view::modules_json(ckpt, opts.depth);
        out["modules"] = modules;
        out["repeats"] = repeats;
    }
    out
}

fn shape_str(shape: &[u64]) -> String {
    format!("[{}]", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
}

/// Observations worth a line: key prefixes, tied weights, what requires_grad means here.
pub fn notes(ckpt: &Checkpoint) -> Vec<String> {
    let mut notes = Vec::new();
    let n = ckpt.tensors.len();
    for (prefix, who) in [
        ("module.", "nn.DataParallel / DistributedDataParallel"),
        ("_orig_mod.", "torch.compile"),
    ] {
        let count = ckpt.tensors.iter().filter(|t| t.name.starts_with(prefix)).count();
        if count > 0 && count == n {
            notes.push(format!("every key starts with '{prefix}' (saved from {who}); load_state_dict on the plain model needs it stripped"));
        } else if count > 0 {
            notes.push(format!("{count} of {n} keys start with '{prefix}' ({who})"));
        }
    }
    let mut by_storage: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for t in &ckpt.tensors {
        if ckpt.storage(t.storage).key.is_some() {
            by_storage.entry(t.storage.0).or_default().push(&t.name);
        }
    }
    let shared: Vec<_> = by_storage.values().filter(|names| names.len() > 1).collect();
    if !shared.is_empty() {
        let examples: Vec<String> = shared.iter().take(3).map(|names| names.join(" = ")).collect();
        notes.push(format!(
            "{} storage(s) shared by several tensors (tied weights or views): {}{}",
            shared.len(),
            examples.join("; "),
            if shared.len() > 3 { "; ..." } else { "" }
        ));
    }
    let params: Vec<&Tensor> = ckpt.tensors.iter().filter(|t| t.parameter).collect();
    if !params.is_empty() {
        let frozen = params.iter().filter(|t| !t.requires_grad).count();
        notes.push(format!(
            "requires_grad is real: {} tensors saved as nn.Parameter, {} trainable, {} frozen",
            params.len(),
            params.len() - frozen,
            frozen
        ));
    } else if ckpt.format != Format::Safetensors && n > 0 {
        notes.push(
            "requires_grad flags are absent: tensors were saved detached (a state_dict), not as nn.Parameter".into(),
        );
    }
    notes
}

pub fn to_text(ckpt: &Checkpoint, path: &str, file_size: Option<u64>, opts: &InspectOptions, tree: bool) -> String {
    let mut out = String::new();
    let tensors: Vec<&Tensor> = selected(ckpt, opts).collect();
    let counts = census(ckpt, tensors.iter().copied());
    let bytes: u64 = tensors.iter().map(|t| t.nbytes()).sum();
    let _ = writeln!(
        out,
        "file      {path}{}",
        file_size.map(|s| format!(" ({})", human_bytes(s))).unwrap_or_default()
    );
    let origin = match ckpt.origin {
        Origin::Data => "",
        Origin::WholeModel => ", whole model (torch.save(model)); names follow model.state_dict()",
        Origin::Scripted => ", TorchScript module; names follow its state_dict()",
    };
    let _ = writeln!(out, "format    {}{origin}", ckpt.format);
    let shown = if opts.filter.is_none() {
        String::new()
    } else {
        format!(" of {} match the filter", ckpt.tensors.len())
    };
    let _ = writeln!(out, "tensors   {}{shown}", tensors.len());
    out.push_str(&count_lines(&counts));
    let _ = writeln!(out, "bytes     {} ({})", grouped(bytes), human_bytes(bytes));
    let mut dtypes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut devices: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &tensors {
        *dtypes.entry(t.dtype.name()).or_default() += 1;
        *devices.entry(ckpt.storage(t.storage).location.as_str()).or_default() += 1;
    }
    let hist = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !tensors.is_empty() {
        let _ = writeln!(out, "dtypes    {}", hist(&dtypes));
        let _ = writeln!(out, "devices   {}", hist(&devices));
    }
    if let Some(dropout) = module_view::dropout_line(ckpt) {
        let _ = writeln!(out, "dropout   {dropout}");
    }
    for note in notes(ckpt) {
        let _ = writeln!(out, "note      {note}");
    }
    // Sections are separated by one blank line; a section with nothing in it is left out.
    if opts.modules {
        out.push('\n');
        out.push_str(&module_view::modules_text(ckpt, opts.depth));
    } else if !tensors.is_empty() {
        out.push('\n');
        if tree {
            out.push_str(&module_tree(ckpt, &tensors, opts.depth));
        } else {
            // A distributed checkpoint's optimizer state gets a table of its own, after the model's.
            let (optim, model): (Vec<&Tensor>, Vec<&Tensor>) =
                tensors.iter().partition(|t| sharding::is_optimizer_state(ckpt, t));
            if !model.is_empty() {
                out.push_str(&table(ckpt, &model, &hashes(ckpt, &model, opts)));
            }
            if !optim.is_empty() {
                if !model.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "optimizer state ({}*)", sharding::OPTIMIZER_PREFIX);
                out.push_str(&table(ckpt, &optim, &hashes(ckpt, &optim, opts)));
            }
        }
    }
    let metadata: Vec<(&String, &Json)> = selected_metadata(ckpt, opts).collect();
    if !metadata.is_empty() {
        let _ = writeln!(out, "\nmetadata");
        for (k, v) in metadata {
            let mut text = v.to_string();
            if text.len() > 100 {
                let cut = (0..=97).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                text.truncate(cut);
                text.push_str("...");
            }
            let _ = writeln!(out, "  {k} = {text}");
        }
    }
    out
}

/// One row per tensor, columns aligned; `hashes` (all Some or all None) adds a sha256 column
/// before grad, which is often empty and so is best last.
fn table(ckpt: &Checkpoint, tensors: &[&Tensor], hashes: &[Option<String>]) -> String {
    let mut rows: Vec<Vec<String>> = vec![vec![
        "name".into(),
        "dtype".into(),
        "shape".into(),
        "device".into(),
        "size".into(),
        "grad".into(),
    ]];
    let hashed = hashes.iter().any(Option::is_some);
    if hashed {
        rows[0].insert(5, "sha256".into());
    }
    let sharded = tensors.iter().any(|t| sharding::summary(ckpt, t).is_some());
    if sharded {
        rows[0].extend(["chunks".into(), "files".into()]);
    }
    for (t, hash) in tensors.iter().zip(hashes) {
        let grad = match (t.parameter, t.requires_grad) {
            (true, true) => "trainable",
            (true, false) => "frozen",
            (false, true) => "requires_grad",
            (false, false) => "",
        };
        let mut row = vec![
            t.name.clone(),
            t.dtype.name().into(),
            shape_str(&t.shape),
            ckpt.storage(t.storage).location.clone(),
            human_bytes(t.nbytes()),
            grad.into(),
        ];
        if let Some(h) = hash {
            row.insert(5, h.clone());
        }
        if sharded {
            let (chunks, files) = sharding::summary(ckpt, t).unwrap_or_default();
            row.extend([chunks, files]);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

const MAX_TREE_DEPTH: usize = 64;

/// Tensors grouped by module prefix, with the parameter count of every module (as the `params`
/// line counts: parameters only, tied ones once) and, for a whole model or TorchScript archive,
/// its class; lines more than `depth` levels below "(all)" left out (their counts are in the
/// lines above).
fn module_tree(ckpt: &Checkpoint, tensors: &[&Tensor], depth: Option<usize>) -> String {
    #[derive(Default)]
    struct Module<'a> {
        params: u64,
        children: Vec<String>,
        index: HashMap<String, usize>,
        tensors: Vec<&'a Tensor>,
    }
    let mut modules: Vec<Module> = vec![Module::default()];
    let mut names: Vec<String> = vec!["(all)".into()];
    let mut paths: Vec<String> = vec![String::new()];
    let counted = counted_parameters(ckpt, tensors.iter().copied());
    for (t, counted) in tensors.iter().zip(counted) {
        let numel = if counted { t.numel() } else { 0 };
        // Bounded depth: a hostile name with a million dots must not recurse a million deep.
        let parts: Vec<&str> = t.name.splitn(MAX_TREE_DEPTH + 1, '.').collect();
        let mut cur = 0;
        modules[0].params += numel;
        for part in &parts[..parts.len().saturating_sub(1)] {
            let next = match modules[cur].index.get(*part) {
                Some(&i) => i,
                None => {
                    let i = modules.len();
                    modules.push(Module::default());
                    names.push(part.to_string());
                    paths.push(match paths[cur].as_str() {
                        "" => part.to_string(),
                        parent => format!("{parent}.{part}"),
                    });
                    modules[cur].index.insert(part.to_string(), i);
                    modules[cur].children.push(part.to_string());
                    i
                }
            };
            cur = next;
            modules[cur].params += numel;
        }
        modules[cur].tensors.push(t);
    }
    let mut out = String::new();
    struct Shown<'m, 'a> {
        ckpt: &'m Checkpoint,
        modules: &'m [Module<'a>],
        names: &'m [String],
        paths: &'m [String],
        /// The class name (`Conv2d`) of each module path the file holds a module object for.
        classes: HashMap<&'m str, &'m str>,
        max_depth: Option<usize>,
    }
    fn show(out: &mut String, view: &Shown, i: usize, depth: usize) {
        let Shown {
            ckpt, modules, names, ..
        } = *view;
        let m = &modules[i];
        let frozen = {
            let mut all: Vec<&Tensor> = Vec::new();
            collect(modules, i, &mut all);
            let params: Vec<_> = all.iter().filter(|t| t.parameter).collect();
            if !params.is_empty() && params.iter().all(|t| !t.requires_grad) {
                "  [frozen]"
            } else {
                ""
            }
        };
        let class = view
            .classes
            .get(view.paths[i].as_str())
            .map(|c| format!("  {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:indent$}{}  {} params{frozen}{class}",
            "",
            names[i],
            grouped(m.params),
            indent = depth * 2
        );
        if view.max_depth.is_some_and(|d| depth >= d) {
            return;
        }
        for t in &m.tensors {
            let leaf = t.name.splitn(MAX_TREE_DEPTH + 1, '.').last().unwrap_or(&t.name);
            let _ = writeln!(
                out,
                "{:indent$}{leaf}  {} {} {}",
                "",
                t.dtype,
                shape_str(&t.shape),
                ckpt.storage(t.storage).location,
                indent = depth * 2 + 2
            );
        }
        for c in &m.children {
            show(out, view, m.index[c], depth + 1);
        }
    }
    fn collect<'a>(modules: &[Module<'a>], i: usize, all: &mut Vec<&'a Tensor>) {
        all.extend(modules[i].tensors.iter().copied());
        for c in &modules[i].children {
            collect(modules, modules[i].index[c], all);
        }
    }
    let view = Shown {
        ckpt,
        modules: &modules,
        names: &names,
        paths: &paths,
        classes: ckpt
            .modules
            .iter()
            .map(|m| (m.path.as_str(), crate::architecture::last_name(&m.class)))
            .collect(),
        max_depth: depth,
    };
    show(&mut out, &view, 0, 0);
    out
}
