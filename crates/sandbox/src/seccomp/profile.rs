//! Loading a profile file for `--security-opt seccomp=FILE`: the OCI
//! `linux.seccomp` object, a whole `config.json`, or Docker's format.

use super::default::{arg_with, masked_eq, syscall_rule};
use super::host::{Host, KernelVersion};
use super::SeccompError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Profiles are small; this only stops `seccomp=/dev/zero` from eating memory.
pub(super) const MAX_PROFILE_BYTES: u64 = 8 << 20;

pub(super) const ACTION_HINT: &str = "use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, \
     SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_TRACE, \
     SCMP_ACT_LOG or SCMP_ACT_NOTIFY";
pub(super) const ARCH_HINT: &str =
    "use a libseccomp architecture such as SCMP_ARCH_X86_64, SCMP_ARCH_X86, \
     SCMP_ARCH_X32, SCMP_ARCH_AARCH64 or SCMP_ARCH_ARM";
pub(super) const OP_HINT: &str =
    "use SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, \
     SCMP_CMP_GE or SCMP_CMP_MASKED_EQ";
pub(super) const FLAG_HINT: &str = "use SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, \
     SECCOMP_FILTER_FLAG_TSYNC or SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV";
pub(super) const ERRNO_HINT: &str =
    "give an errno number from 0 to 4095, e.g. 1 for EPERM or 38 for ENOSYS";

/// Reads a profile for `--security-opt seccomp=FILE`.
///
/// Accepts the OCI runtime-spec `linux.seccomp` object (or a whole OCI
/// `config.json` holding one) and Docker's profile format. Docker's
/// `includes`/`excludes` are resolved here against `capabilities`, this
/// machine's architecture and its kernel, as dockerd would.
pub fn load_profile(
    path: &Path,
    capabilities: &[Capability],
) -> Result<LinuxSeccomp, SeccompError> {
    let file = std::fs::File::open(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SeccompError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(SeccompError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PROFILE_BYTES,
        });
    }
    parse_profile(path, &bytes, capabilities, &Host::detect())
}

pub(super) fn parse_profile(
    path: &Path,
    bytes: &[u8],
    capabilities: &[Capability],
    host: &Host,
) -> Result<LinuxSeccomp, SeccompError> {
    let document: Value = serde_json::from_slice(bytes).map_err(|source| SeccompError::Json {
        path: path.to_owned(),
        source,
    })?;
    let granted: BTreeSet<String> = capabilities.iter().map(capability_name).collect();
    let parser = Parser {
        path,
        host,
        granted: &granted,
    };
    parser.profile(&document)
}

/// `CAP_SYS_ADMIN` style, as profiles spell capabilities.
pub(super) fn capability_name(cap: &Capability) -> String {
    // The serde name is the exact OCI spelling.
    match serde_json::to_value(cap) {
        Ok(Value::String(name)) => name,
        _ => format!("CAP_{cap}"),
    }
}

/// Normalises a capability as written in a profile: case-insensitive, with or
/// without the `CAP_` prefix.
pub(super) fn normalise_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

pub(super) struct Parser<'a> {
    path: &'a Path,
    host: &'a Host,
    granted: &'a BTreeSet<String>,
}

/// Docker's `includes`/`excludes`.
#[derive(Default)]
pub(super) struct Filter {
    caps: Vec<String>,
    arches: Vec<String>,
    min_kernel: Option<KernelVersion>,
}

impl Parser<'_> {
    pub(super) fn invalid(
        &self,
        field: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> SeccompError {
        SeccompError::Invalid {
            path: self.path.to_owned(),
            field: field.into(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    pub(super) fn profile(&self, document: &Value) -> Result<LinuxSeccomp, SeccompError> {
        let Value::Object(top) = document else {
            return Err(self.invalid(
                "the document",
                format!("is {}, not a JSON object", describe(document)),
                "a profile looks like {\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}",
            ));
        };
        // A whole OCI config.json: use its linux.seccomp.
        if !top.contains_key("defaultAction") {
            if let Some(linux) = top.get("linux") {
                return match linux.get("seccomp") {
                    Some(seccomp @ Value::Object(_)) => self.profile(seccomp),
                    _ => Err(self.invalid(
                        "linux.seccomp",
                        "is missing",
                        "this looks like an OCI config.json without a seccomp section; \
                         pass a seccomp profile instead",
                    )),
                };
            }
        }
        self.warn_unknown(
            "the profile",
            top,
            &[
                "defaultAction",
                "defaultErrnoRet",
                "architectures",
                "archMap",
                "flags",
                "listenerPath",
                "listenerMetadata",
                "syscalls",
            ],
        );

        let default_action = match top.get("defaultAction") {
            None | Some(Value::Null) => {
                return Err(self.invalid(
                    "defaultAction",
                    "is missing",
                    "add e.g. \"defaultAction\": \"SCMP_ACT_ERRNO\" to deny unlisted syscalls",
                ))
            }
            Some(v) => self.action("defaultAction", v)?,
        };
        if default_action == LinuxSeccompAction::ScmpActNotify {
            return Err(self.invalid(
                "defaultAction",
                "is SCMP_ACT_NOTIFY",
                "the container could not even send its notify fd; notify only specific syscalls",
            ));
        }
        let default_errno = self.optional_errno("defaultErrnoRet", top.get("defaultErrnoRet"))?;

        let mut profile = LinuxSeccomp::default();
        profile.set_default_action(default_action);
        profile.set_default_errno_ret(default_errno);
        profile.set_architectures(self.architectures(top)?);
        profile.set_flags(self.flags(top.get("flags"))?);
        profile.set_listener_path(
            self.optional_string("listenerPath", top.get("listenerPath"))?
                .map(PathBuf::from),
        );
        profile.set_listener_metadata(
            self.optional_string("listenerMetadata", top.get("listenerMetadata"))?,
        );

        let mut rules = Vec::new();
        let mut notifies = false;
        for (i, entry) in self
            .optional_array("syscalls", top.get("syscalls"))?
            .iter()
            .enumerate()
        {
            if let Some(rule) = self.syscall(&format!("syscalls[{i}]"), entry)? {
                notifies |= rule.action() == LinuxSeccompAction::ScmpActNotify;
                rules.push(rule);
            }
        }
        if notifies && profile.listener_path().is_none() {
            return Err(self.invalid(
                "listenerPath",
                "is missing but a rule uses SCMP_ACT_NOTIFY",
                "set listenerPath to the seccomp agent's socket, or use another action",
            ));
        }
        profile.set_syscalls(Some(rules));
        Ok(profile)
    }

    pub(super) fn architectures(
        &self,
        top: &Map<String, Value>,
    ) -> Result<Option<Vec<Arch>>, SeccompError> {
        let listed = self.optional_array("architectures", top.get("architectures"))?;
        let map = self.optional_array("archMap", top.get("archMap"))?;
        if !listed.is_empty() && !map.is_empty() {
            return Err(self.invalid(
                "architectures",
                "is given together with archMap",
                "keep only one of the two",
            ));
        }
        let mut arches = Vec::new();
        for (i, name) in listed.iter().enumerate() {
            arches.push(self.arch(&format!("architectures[{i}]"), name)?);
        }
        // Docker's archMap: the entry for this machine and its compat ABIs.
        for (i, entry) in map.iter().enumerate() {
            let field = format!("archMap[{i}]");
            let Value::Object(entry) = entry else {
                return Err(self.invalid(
                    &field,
                    format!("is {}, not an object", describe(entry)),
                    "write {\"architecture\": \"SCMP_ARCH_X86_64\", \"subArchitectures\": [...]}",
                ));
            };
            let main_field = format!("{field}.architecture");
            let Some(main) = self.optional_string(&main_field, entry.get("architecture"))? else {
                return Err(self.invalid(
                    main_field,
                    "is missing",
                    "name the architecture this entry is for, e.g. \"SCMP_ARCH_X86_64\"",
                ));
            };
            if main != self.host.scmp_arch {
                continue;
            }
            arches.push(self.arch(&main_field, &Value::String(main))?);
            let sub_field = format!("{field}.subArchitectures");
            for (j, sub) in self
                .optional_array(&sub_field, entry.get("subArchitectures"))?
                .iter()
                .enumerate()
            {
                arches.push(self.arch(&format!("{sub_field}[{j}]"), sub)?);
            }
        }
        Ok((!arches.is_empty()).then_some(arches))
    }

    pub(super) fn flags(
        &self,
        value: Option<&Value>,
    ) -> Result<Option<Vec<LinuxSeccompFilterFlag>>, SeccompError> {
        let mut flags = Vec::new();
        for (i, flag) in self.optional_array("flags", value)?.iter().enumerate() {
            let field = format!("flags[{i}]");
            flags.push(self.enum_value(&field, flag, "a seccomp filter flag", FLAG_HINT)?);
        }
        Ok((!flags.is_empty()).then_some(flags))
    }

    /// One `syscalls` entry; `None` when includes/excludes leave it out here.
    pub(super) fn syscall(
        &self,
        field: &str,
        entry: &Value,
    ) -> Result<Option<LinuxSyscall>, SeccompError> {
        let Value::Object(entry) = entry else {
            return Err(self.invalid(
                field,
                format!("is {}, not an object", describe(entry)),
                "write {\"names\": [\"...\"], \"action\": \"SCMP_ACT_ALLOW\"}",
            ));
        };
        self.warn_unknown(
            field,
            entry,
            &[
                "name", "names", "action", "errnoRet", "args", "includes", "excludes", "comment",
            ],
        );

        let names = self.names(field, entry)?;
        let action_field = format!("{field}.action");
        let action = match entry.get("action") {
            None | Some(Value::Null) => {
                return Err(self.invalid(
                    action_field,
                    "is missing",
                    format!("say what happens to these syscalls; {ACTION_HINT}"),
                ))
            }
            Some(v) => self.action(&action_field, v)?,
        };
        if action == LinuxSeccompAction::ScmpActNotify && names.iter().any(|n| n == "write") {
            return Err(self.invalid(
                action_field,
                "is SCMP_ACT_NOTIFY for write",
                "the container needs write to hand over its notify fd; use another action for write",
            ));
        }
        let errno = self.optional_errno(&format!("{field}.errnoRet"), entry.get("errnoRet"))?;
        let args = self.args(field, entry.get("args"))?;
        let includes = self.filter(&format!("{field}.includes"), entry.get("includes"))?;
        let excludes = self.filter(&format!("{field}.excludes"), entry.get("excludes"))?;

        if !self.applies(&includes, &excludes) {
            return Ok(None);
        }
        Ok(Some(syscall_rule(
            names.iter().map(String::as_str),
            action,
            errno,
            args,
        )))
    }

    pub(super) fn names(
        &self,
        field: &str,
        entry: &Map<String, Value>,
    ) -> Result<Vec<String>, SeccompError> {
        let single = entry.get("name").filter(|v| !v.is_null());
        let many = entry.get("names").filter(|v| !v.is_null());
        let names = match (single, many) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    format!("{field}.name"),
                    "is given together with names",
                    "keep only \"names\": [...]",
                ))
            }
            (None, None) => {
                return Err(self.invalid(
                    format!("{field}.names"),
                    "is missing",
                    "list the syscalls this rule is for, e.g. \"names\": [\"read\", \"write\"]",
                ))
            }
            (Some(one), None) => vec![(format!("{field}.name"), one)],
            (None, Some(list)) => {
                let list_field = format!("{field}.names");
                let Value::Array(list) = list else {
                    return Err(self.invalid(
                        list_field,
                        format!("is {}, not an array", describe(list)),
                        "write \"names\": [\"read\", \"write\"]",
                    ));
                };
                if list.is_empty() {
                    return Err(self.invalid(
                        list_field,
                        "is empty",
                        "list at least one syscall, or remove the rule",
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{list_field}[{i}]"), v))
                    .collect()
            }
        };
        names
            .into_iter()
            .map(|(field, value)| {
                let name = self.string(&field, value, "a syscall name")?;
                let looks_right = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if looks_right {
                    Ok(name.to_owned())
                } else {
                    Err(self.invalid(
                        field,
                        format!("{name:?} is not a syscall name"),
                        "syscall names are lower case, like \"openat\" or \"clock_nanosleep\"",
                    ))
                }
            })
            .collect()
    }

    pub(super) fn args(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<Vec<LinuxSeccompArg>>, SeccompError> {
        let list_field = format!("{field}.args");
        let list = self.optional_array(&list_field, value)?;
        if list.is_empty() {
            return Ok(None);
        }
        let mut args = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let field = format!("{list_field}[{i}]");
            let Value::Object(item) = item else {
                return Err(self.invalid(
                    &field,
                    format!("is {}, not an object", describe(item)),
                    "write {\"index\": 0, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}",
                ));
            };
            let index_field = format!("{field}.index");
            let index = self.required_u64(&index_field, item.get("index"))?;
            if index > 5 {
                return Err(self.invalid(
                    index_field,
                    format!("is {index}"),
                    "syscalls have at most 6 arguments, numbered 0 to 5",
                ));
            }
            let value = self.required_u64(&format!("{field}.value"), item.get("value"))?;
            let value_two = match item.get("valueTwo") {
                None | Some(Value::Null) => None,
                Some(v) => Some(self.u64(&format!("{field}.valueTwo"), v)?),
            };
            let op_field = format!("{field}.op");
            let op: LinuxSeccompOperator = match item.get("op") {
                None | Some(Value::Null) => {
                    return Err(self.invalid(op_field, "is missing", OP_HINT));
                }
                Some(v) => self.enum_value(&op_field, v, "a seccomp comparison", OP_HINT)?,
            };
            // `index` is at most 5 here, so the cast cannot truncate.
            let index = index as usize;
            args.push(if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
                masked_eq(index, value, value_two.unwrap_or(0))
            } else {
                arg_with(index, op, value, value_two)
            });
        }
        Ok(Some(args))
    }

    pub(super) fn filter(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Filter, SeccompError> {
        let obj = match value {
            None | Some(Value::Null) => return Ok(Filter::default()),
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                return Err(self.invalid(
                    field,
                    format!("is {}, not an object", describe(other)),
                    "write {\"caps\": [...], \"arches\": [...], \"minKernel\": \"4.8\"}",
                ))
            }
        };
        let strings = |key: &str| -> Result<Vec<String>, SeccompError> {
            let list_field = format!("{field}.{key}");
            self.optional_array(&list_field, obj.get(key))?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    self.string(&format!("{list_field}[{i}]"), v, "a name")
                        .map(str::to_owned)
                })
                .collect()
        };
        let min_kernel_field = format!("{field}.minKernel");
        let min_kernel = match self.optional_string(&min_kernel_field, obj.get("minKernel"))? {
            None => None,
            Some(text) => Some(
                KernelVersion::parse(&text)
                    .filter(|_| text.trim().chars().all(|c| c.is_ascii_digit() || c == '.'))
                    .ok_or_else(|| {
                        self.invalid(
                            min_kernel_field,
                            format!("{text:?} is not a kernel version"),
                            "write it as \"MAJOR.MINOR\", e.g. \"4.8\"",
                        )
                    })?,
            ),
        };
        Ok(Filter {
            caps: strings("caps")?
                .iter()
                .map(|c| normalise_capability(c))
                .collect(),
            arches: strings("arches")?,
            min_kernel,
        })
    }

    /// Docker's rule: every include must hold and no exclude may.
    pub(super) fn applies(&self, includes: &Filter, excludes: &Filter) -> bool {
        let kernel_at_least = |min: KernelVersion| self.host.kernel.is_some_and(|k| k >= min);
        let has_cap = |cap: &String| self.granted.contains(cap);

        if excludes.arches.iter().any(|a| self.host.is_arch(a))
            || excludes.caps.iter().any(has_cap)
            || excludes.min_kernel.is_some_and(kernel_at_least)
        {
            return false;
        }
        (includes.arches.is_empty() || includes.arches.iter().any(|a| self.host.is_arch(a)))
            && includes.caps.iter().all(has_cap)
            && includes.min_kernel.is_none_or(kernel_at_least)
    }

    pub(super) fn action(
        &self,
        field: &str,
        value: &Value,
    ) -> Result<LinuxSeccompAction, SeccompError> {
        self.enum_value(field, value, "a seccomp action", ACTION_HINT)
    }

    pub(super) fn arch(&self, field: &str, value: &Value) -> Result<Arch, SeccompError> {
        self.enum_value(field, value, "a seccomp architecture", ARCH_HINT)
    }

    /// Parses a string into one of oci-spec's enums by its JSON spelling.
    pub(super) fn enum_value<T: serde::de::DeserializeOwned>(
        &self,
        field: &str,
        value: &Value,
        what: &str,
        hint: &str,
    ) -> Result<T, SeccompError> {
        let text = self.string(field, value, what)?;
        serde_json::from_value(Value::String(text.to_owned()))
            .map_err(|_| self.invalid(field, format!("{text:?} is not {what}"), hint))
    }

    pub(super) fn string<'v>(
        &self,
        field: &str,
        value: &'v Value,
        what: &str,
    ) -> Result<&'v str, SeccompError> {
        value.as_str().ok_or_else(|| {
            self.invalid(
                field,
                format!("is {}, not a string", describe(value)),
                format!("write {what} in double quotes"),
            )
        })
    }

    pub(super) fn optional_string(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<String>, SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self
                .string(field, v, "the value")
                .map(|s| Some(s.to_owned())),
        }
    }

    /// A list that may be absent or null (Docker writes `null` for empty).
    pub(super) fn optional_array<'v>(
        &self,
        field: &str,
        value: Option<&'v Value>,
    ) -> Result<&'v [Value], SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.invalid(
                field,
                format!("is {}, not an array", describe(other)),
                "write a JSON list: [...]",
            )),
        }
    }

    pub(super) fn u64(&self, field: &str, value: &Value) -> Result<u64, SeccompError> {
        value.as_u64().ok_or_else(|| {
            self.invalid(
                field,
                format!(
                    "is {}, not a whole number from 0 to 2^64-1",
                    describe(value)
                ),
                "write the number without quotes, e.g. 0 or 2114060288",
            )
        })
    }

    pub(super) fn required_u64(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<u64, SeccompError> {
        match value {
            None | Some(Value::Null) => Err(self.invalid(
                field,
                "is missing",
                "every argument condition needs index, value and op",
            )),
            Some(v) => self.u64(field, v),
        }
    }

    pub(super) fn optional_errno(
        &self,
        field: &str,
        value: Option<&Value>,
    ) -> Result<Option<u32>, SeccompError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= 4095 => Ok(Some(n as u32)),
                _ => Err(self.invalid(
                    field,
                    format!("is {}, not an errno number", describe(v)),
                    ERRNO_HINT,
                )),
            },
        }
    }

    pub(super) fn warn_unknown(&self, field: &str, obj: &Map<String, Value>, known: &[&str]) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            tracing::warn!(
                path = %self.path.display(),
                "seccomp profile: ignoring unknown key {key:?} in {field}"
            );
        }
    }
}

/// A short description of a JSON value for error messages.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
