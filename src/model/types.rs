//! Typed Tekton v1 objects (and the few Kubernetes objects workspaces bind).
//!
//! Field names follow Tekton verbatim. Every struct tolerates unknown fields (Tekton's
//! webhook drops them too). Scalars arrive as strings (see `yaml.rs`), so the few typed
//! fields parse leniently.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub type Map = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty", deserialize_with = "lenient_map")]
    pub labels: Map,
    #[serde(skip_serializing_if = "Map::is_empty", deserialize_with = "lenient_map")]
    pub annotations: Map,
}

/// A param or result value, typed by its JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Str(String),
    Array(Vec<String>),
    Object(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        let scalar = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Null => Some(String::new()),
                _ => None,
            }
        };
        match &v {
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    scalar(i)
                        .ok_or_else(|| D::Error::custom("array values must be strings, not nested lists or objects"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ParamValue::Array),
            Value::Object(m) => m
                .iter()
                .map(|(k, i)| {
                    scalar(i)
                        .map(|s| (k.clone(), s))
                        .ok_or_else(|| D::Error::custom(format!("object values must be strings, key {k:?} is not")))
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(ParamValue::Object),
            other => Ok(ParamValue::Str(scalar(other).unwrap_or_default())),
        }
    }
}

impl ParamValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Str(_) => "string",
            ParamValue::Array(_) => "array",
            ParamValue::Object(_) => "object",
        }
    }
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
    /// Every string the value holds: the string, the array's elements, the object's values.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            ParamValue::Str(s) => vec![s.as_str()],
            ParamValue::Array(a) => a.iter().map(String::as_str).collect(),
            ParamValue::Object(o) => o.values().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Array,
    Object,
}

impl ParamType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PropertySpec {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, PropertySpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<ParamValue>,
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_: Option<Vec<String>>,
}

impl ParamSpec {
    /// The effective type: explicit, else inferred as Tekton's defaulting does.
    pub fn param_type(&self) -> ParamType {
        match self.type_.as_deref() {
            Some("array") => ParamType::Array,
            Some("object") => ParamType::Object,
            Some(_) => ParamType::String,
            None => {
                if self.properties.is_some() {
                    ParamType::Object
                } else {
                    match &self.default {
                        Some(ParamValue::Array(_)) => ParamType::Array,
                        Some(ParamValue::Object(_)) => ParamType::Object,
                        _ => ParamType::String,
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Param {
    #[serde(default)]
    pub name: String,
    #[serde(default = "empty_value")]
    pub value: ParamValue,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskResult {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, PropertySpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<ParamValue>,
}

impl TaskResult {
    pub fn result_type(&self) -> ParamType {
        match self.type_.as_deref() {
            Some("array") => ParamType::Array,
            Some("object") => ParamType::Object,
            Some(_) => ParamType::String,
            None if self.properties.is_some() => ParamType::Object,
            None => ParamType::String,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WhenExpression {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cel: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StepRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(deserialize_with = "lenient_bool", skip_serializing_if = "is_false")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkspaceUsage {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

/// A step, a sidecar, or a stepTemplate (all optional so a template can merge in).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Step {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenExpression>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<StepRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_resources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_config: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkspaceDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(deserialize_with = "lenient_bool", skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(deserialize_with = "lenient_bool", skip_serializing_if = "is_false")]
    pub optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_template: Option<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceDeclaration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Value>,
}

/// `taskSpec` inside a PipelineTask: a TaskSpec plus optional metadata.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EmbeddedTask {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    #[serde(flatten)]
    pub task: TaskSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Ref {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct IncludeParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Matrix {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<IncludeParams>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkspacePipelineTaskBinding {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineTask {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<EmbeddedTask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Matrix>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspacePipelineTaskBinding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub run_after: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenExpression>,
    #[serde(deserialize_with = "lenient_u32", skip_serializing_if = "is_zero")]
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineResult {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<ParamValue>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineWorkspaceDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(deserialize_with = "lenient_bool", skip_serializing_if = "is_false")]
    pub optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<PipelineTask>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<PipelineTask>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<PipelineResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<PipelineWorkspaceDeclaration>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMapSource {
    #[serde(alias = "secretName")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretSource {
    pub secret_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PvcSource {
    pub claim_name: String,
    #[serde(deserialize_with = "lenient_bool", skip_serializing_if = "is_false")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkspaceBinding {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TimeoutFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finally: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineTaskRunSpec {
    pub pipeline_task_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PipelineRunSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_run_template: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<PipelineSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceBinding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutFields>,
    /// v1beta1 spelling of `timeouts.pipeline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_run_specs: Vec<PipelineTaskRunSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskRunSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<Ref>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<TaskSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceBinding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(deserialize_with = "lenient_u32", skip_serializing_if = "is_zero")]
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StepActionSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// A ConfigMap or Secret: string data only (Secret `data` is base64 and decoded on use).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyData {
    #[serde(deserialize_with = "lenient_map")]
    pub data: Map,
    #[serde(deserialize_with = "lenient_map")]
    pub string_data: Map,
    #[serde(deserialize_with = "lenient_map")]
    pub binary_data: Map,
}

fn empty_value() -> ParamValue {
    ParamValue::Str(String::new())
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `true`/`false` as YAML bool or string.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(serde::de::Error::custom(format!("expected a boolean, got {other}"))),
    }
}

/// A non-negative integer as YAML number or string.
pub fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("expected a non-negative integer, got {n}"))),
        Some(Value::String(s)) => s
            .parse::<u32>()
            .map_err(|_| serde::de::Error::custom(format!("expected a non-negative integer, got {s:?}"))),
        Some(other) => Err(serde::de::Error::custom(format!("expected a non-negative integer, got {other}"))),
    }
}

/// A string map whose values may be null (treated as empty).
pub fn lenient_map<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
    let m = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?;
    Ok(m.unwrap_or_default().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
}

/// Where a PromotionPolicy's decisions are recorded in the target repository, one file
/// per id: `.tenon/promotions/<environment>/<id>.yaml` (never a task input).
pub const LEDGER_DIR: &str = ".tenon";

/// `tenon.dev/v1alpha1` `PromotionPolicy`: when the results of a PipelineRun pass its
/// gates, set fields of files in a git repository to the promoted subject.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PromotionPolicySpec {
    /// The PipelineRun whose results are judged.
    pub pipeline_run_ref: NameRef,
    /// One writer per (policy, environment); names the ledger directory.
    pub environment: String,
    pub subject: PromotionSubject,
    /// All must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    pub target: PromotionTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitSpec>,
    /// `direct` (commit to the branch) or `branch` (push `tenon/promote/<env>/<id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NameRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PromotionSubject {
    /// What is promoted, e.g. `$(tasks.package.results.model-uri)`.
    pub uri: String,
    /// Its content digest (`sha256:...`): the identity of the thing.
    pub digest: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Gate {
    /// The observed value, e.g. `$(tasks.evaluate.results.accuracy)`.
    pub result: String,
    /// `>=`, `>`, `<=`, `<`, `==`, `!=`, `in`, `notin`.
    pub operator: String,
    /// Threshold (numeric for ordering operators).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `in`/`notin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Compare with the value currently deployed: a field in the target repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incumbent: Option<FieldRef>,
    /// With `incumbent`: the observed value must beat it by this much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldRef {
    pub file: String,
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PromotionTarget {
    /// Default: the repository tenon watches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Scalar edits: set `path` in `file` to `value` (with `$(...)` substitution).
    pub updates: Vec<FieldUpdate>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldUpdate {
    pub file: String,
    pub path: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct CommitSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    /// Message template: `$(policy)`, `$(environment)`, `$(subject.uri)`,
    /// `$(subject.digest)`, `$(tasks.x.results.y)`; no clock or random values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Author {
    pub name: String,
    pub email: String,
}
