//! `adapter_config.json`: the peft LoRA configuration, and how it picks modules.
//!
//! Fields linattn reads are typed; every other field (peft writes many: `peft_version`,
//! `layers_to_transform`, ...) is kept in `extra` and written back unchanged on save.
//!
//! Matching follows peft:
//! - `target_modules` as a list: a module path matches an entry when it equals it or ends
//!   with `"." + entry`. As a string: a regex that must match the whole path.
//! - `rank_pattern` / `alpha_pattern`: keys are regexes tried in file order; key `k`
//!   matches path `p` when `(.*\.)?(k)$` matches `p` from its start. The first matching
//!   key wins; no match means the global `r` / `lora_alpha`.
//! - `modules_to_save` entries exclude a module from LoRA when they name a path segment.
//!
//! Scaling of a module with rank r and alpha a: `a / r`, or `a / sqrt(r)` with rsLoRA.

use linattn_tensor::{Error, Result};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `target_modules`: a list of names (suffix match) or one full-match regex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

/// A JSON object whose entries keep their file order (peft tries pattern keys in order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderedPatterns<T>(pub Vec<(String, T)>);

impl<T> OrderedPatterns<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedPatterns<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct OrderedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = OrderedPatterns<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of pattern -> value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> std::result::Result<Self::Value, M::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    entries.push((k, v));
                }
                Ok(OrderedPatterns(entries))
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(OrderedPatterns(Vec::new()))
            }
        }
        deserializer.deserialize_any(OrderedVisitor(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for OrderedPatterns<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}
fn default_peft_type() -> String {
    "LORA".into()
}
fn default_init() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

/// The parsed `adapter_config.json` of a peft LoRA adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub rank_pattern: OrderedPatterns<usize>,
    #[serde(default)]
    pub alpha_pattern: OrderedPatterns<f64>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// `true`, `false` or a method name such as `"gaussian"` (kept as written).
    #[serde(default = "default_init")]
    pub init_lora_weights: serde_json::Value,
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Every other field of the file, written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl LoraConfig {
    /// A config with peft's defaults for rank `r`, alpha `lora_alpha` and the given targets.
    pub fn new(r: usize, lora_alpha: f64, target_modules: Vec<String>) -> LoraConfig {
        LoraConfig {
            r,
            lora_alpha,
            target_modules: Some(TargetModules::List(target_modules)),
            lora_dropout: 0.0,
            bias: default_bias(),
            use_rslora: false,
            use_dora: false,
            fan_in_fan_out: false,
            rank_pattern: OrderedPatterns::default(),
            alpha_pattern: OrderedPatterns::default(),
            modules_to_save: None,
            init_lora_weights: default_init(),
            peft_type: default_peft_type(),
            task_type: None,
            base_model_name_or_path: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses the JSON text of an `adapter_config.json` and validates it.
    pub fn from_json(text: &str) -> Result<LoraConfig> {
        let config: LoraConfig =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("adapter_config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Pretty JSON as peft writes it (typed fields plus the preserved extras).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::invalid(format!("adapter_config.json: {e}")))
    }

    /// Checks what linattn relies on: a LORA peft type, ranks >= 1, finite alphas,
    /// a dropout in [0, 1), `bias` "none" (linattn stores no LoRA bias), valid regexes.
    pub fn validate(&self) -> Result<()> {
        if self.peft_type != "LORA" {
            return Err(Error::invalid(format!("adapter_config.json: peft_type `{}` is not LORA", self.peft_type)));
        }
        if self.r == 0 {
            return Err(Error::invalid("adapter_config.json: `r` is 0; LoRA rank must be >= 1"));
        }
        if let Some((key, _)) = self.rank_pattern.0.iter().find(|(_, r)| *r == 0) {
            return Err(Error::invalid(format!("adapter_config.json: rank_pattern `{key}` has rank 0")));
        }
        if !self.lora_alpha.is_finite() {
            return Err(Error::invalid(format!("adapter_config.json: lora_alpha {} is not finite", self.lora_alpha)));
        }
        if let Some((key, a)) = self.alpha_pattern.0.iter().find(|(_, a)| !a.is_finite()) {
            return Err(Error::invalid(format!("adapter_config.json: alpha_pattern `{key}` = {a} is not finite")));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::invalid(format!(
                "adapter_config.json: lora_dropout {} not in [0, 1)",
                self.lora_dropout
            )));
        }
        if self.bias != "none" {
            return Err(Error::invalid(format!(
                "adapter_config.json: bias `{}` is not supported (only \"none\")",
                self.bias
            )));
        }
        if let Some(TargetModules::Regex(re)) = &self.target_modules {
            full_match_regex(re)?;
        }
        for (key, _) in &self.rank_pattern.0 {
            pattern_regex(key)?;
        }
        for (key, _) in &self.alpha_pattern.0 {
            pattern_regex(key)?;
        }
        Ok(())
    }

    /// Whether peft would put a LoRA layer on the module at `path` (e.g. `layers.0.q_proj`).
    pub fn targets(&self, path: &str) -> Result<bool> {
        if let Some(saved) = &self.modules_to_save {
            for name in saved {
                let segment = regex::Regex::new(&format!(r"^(.*\.)?{name}(\..*)?$"))
                    .map_err(|e| Error::invalid(format!("modules_to_save `{name}`: {e}")))?;
                if segment.is_match(path) {
                    return Ok(false);
                }
            }
        }
        Ok(match &self.target_modules {
            None => false,
            Some(TargetModules::List(names)) => names.iter().any(|n| {
                path == n
                    || (path.len() > n.len() && path.ends_with(n.as_str()) && {
                        path.as_bytes()[path.len() - n.len() - 1] == b'.'
                    })
            }),
            Some(TargetModules::Regex(re)) => full_match_regex(re)?.is_match(path),
        })
    }

    /// The rank of the module at `path` (first matching `rank_pattern` key, else `r`).
    pub fn rank_for(&self, path: &str) -> Result<usize> {
        for (key, r) in &self.rank_pattern.0 {
            if pattern_regex(key)?.is_match(path) {
                return Ok(*r);
            }
        }
        Ok(self.r)
    }

    /// The alpha of the module at `path` (first matching `alpha_pattern` key, else `lora_alpha`).
    pub fn alpha_for(&self, path: &str) -> Result<f64> {
        for (key, a) in &self.alpha_pattern.0 {
            if pattern_regex(key)?.is_match(path) {
                return Ok(*a);
            }
        }
        Ok(self.lora_alpha)
    }

    /// The scaling `alpha / r` (or `alpha / sqrt(r)` with rsLoRA) of the module at `path`.
    pub fn scaling_for(&self, path: &str) -> Result<f32> {
        Ok(lora_scaling(self.alpha_for(path)?, self.rank_for(path)?, self.use_rslora))
    }
}

/// `alpha / r`, or `alpha / sqrt(r)` when `use_rslora`.
pub fn lora_scaling(alpha: f64, r: usize, use_rslora: bool) -> f32 {
    let denom = if use_rslora { (r as f64).sqrt() } else { r as f64 };
    (alpha / denom) as f32
}

fn full_match_regex(re: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| Error::invalid(format!("adapter_config.json: target_modules regex `{re}`: {e}")))
}

fn pattern_regex(key: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!(r"^(.*\.)?({key})$"))
        .map_err(|e| Error::invalid(format!("adapter_config.json: pattern key `{key}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_targets_match_whole_names_or_dotted_suffixes() {
        let c = LoraConfig::new(4, 8.0, vec!["q_proj".into(), "mlp.up".into()]);
        assert!(c.targets("q_proj").unwrap());
        assert!(c.targets("layers.0.attn.q_proj").unwrap());
        assert!(c.targets("layers.1.mlp.up").unwrap());
        assert!(!c.targets("layers.0.attn.xq_proj").unwrap());
        assert!(!c.targets("layers.0.attn.q_proj.inner").unwrap());
        assert!(!c.targets("layers.0.mlp.upper").unwrap());
    }

    #[test]
    fn regex_targets_must_match_the_whole_path() {
        let mut c = LoraConfig::new(4, 8.0, vec![]);
        c.target_modules = Some(TargetModules::Regex(r".*\.(q|v)_proj".into()));
        assert!(c.targets("layers.3.q_proj").unwrap());
        assert!(!c.targets("layers.3.k_proj").unwrap());
        assert!(!c.targets("q_proj").unwrap());
    }

    #[test]
    fn patterns_pick_rank_and_alpha_in_file_order() {
        let text = r#"{"r": 4, "lora_alpha": 8, "target_modules": ["a", "b"],
            "rank_pattern": {"layers.1.a": 2, "a": 6}, "alpha_pattern": {"b": 3.5},
            "peft_version": "0.21.2", "layers_pattern": null}"#;
        let c = LoraConfig::from_json(text).unwrap();
        assert_eq!(c.rank_for("layers.1.a").unwrap(), 2);
        assert_eq!(c.rank_for("layers.0.a").unwrap(), 6);
        assert_eq!(c.rank_for("layers.0.b").unwrap(), 4);
        assert_eq!(c.rank_for("layers.0.ba").unwrap(), 4);
        assert_eq!(c.alpha_for("x.b").unwrap(), 3.5);
        assert_eq!(c.scaling_for("x.b").unwrap(), 3.5 / 4.0);
        // Unknown fields survive a round trip.
        let again = LoraConfig::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(again.extra.get("peft_version").unwrap(), "0.21.2");
        assert_eq!(again, c);
    }

    #[test]
    fn rslora_divides_by_sqrt_rank() {
        assert_eq!(lora_scaling(16.0, 4, true), 8.0);
        assert_eq!(lora_scaling(16.0, 4, false), 4.0);
    }

    #[test]
    fn modules_to_save_exclude_targets() {
        let mut c = LoraConfig::new(4, 8.0, vec!["head".into()]);
        c.modules_to_save = Some(vec!["head".into()]);
        assert!(!c.targets("model.head").unwrap());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let err = LoraConfig::from_json(r#"{"r": 0, "target_modules": ["a"]}"#).unwrap_err().to_string();
        assert!(err.contains("`r` is 0"), "{err}");
        let err = LoraConfig::from_json(r#"{"r": 2, "rank_pattern": {"x": 0}}"#).unwrap_err().to_string();
        assert!(err.contains("rank_pattern `x`"), "{err}");
        let err = LoraConfig::from_json(r#"{"r": 2, "target_modules": "(unclosed"}"#).unwrap_err().to_string();
        assert!(err.contains("(unclosed"), "{err}");
        let err = LoraConfig::from_json(r#"{"r": 2, "peft_type": "IA3"}"#).unwrap_err().to_string();
        assert!(err.contains("IA3"), "{err}");
    }
}
