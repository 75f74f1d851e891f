//! One offer (or one worker's metadata) in the normalized schema, as a row.

use crate::error::{PlacementError, Result};
use crate::field::{Field, Kind};
use crate::value::Value;

/// A normalized offer. Every field may be missing (`None`); a missing value fails every
/// comparison on its field except `neq` and `notin`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offer {
    pub id: Option<String>,
    pub provider: Option<String>,
    pub gpu_name: Option<String>,
    pub gpu_count: Option<i64>,
    pub vram_gb: Option<f64>,
    pub cpu: Option<f64>,
    pub memory_gb: Option<f64>,
    pub disk_gb: Option<f64>,
    pub price_per_hour_usd: Option<f64>,
    pub reliability: Option<f64>,
    pub inet_down: Option<f64>,
    pub inet_up: Option<f64>,
    /// ISO country code, upper case.
    pub geolocation: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub cuda: Option<f64>,
    pub verified: Option<bool>,
}

impl Offer {
    pub fn number(&self, field: Field) -> Option<f64> {
        match field {
            Field::VramGb => self.vram_gb,
            Field::Cpu => self.cpu,
            Field::MemoryGb => self.memory_gb,
            Field::DiskGb => self.disk_gb,
            Field::PricePerHourUsd => self.price_per_hour_usd,
            Field::Reliability => self.reliability,
            Field::InetDown => self.inet_down,
            Field::InetUp => self.inet_up,
            Field::Cuda => self.cuda,
            _ => None,
        }
    }

    fn number_mut(&mut self, field: Field) -> Option<&mut Option<f64>> {
        Some(match field {
            Field::VramGb => &mut self.vram_gb,
            Field::Cpu => &mut self.cpu,
            Field::MemoryGb => &mut self.memory_gb,
            Field::DiskGb => &mut self.disk_gb,
            Field::PricePerHourUsd => &mut self.price_per_hour_usd,
            Field::Reliability => &mut self.reliability,
            Field::InetDown => &mut self.inet_down,
            Field::InetUp => &mut self.inet_up,
            Field::Cuda => &mut self.cuda,
            _ => return None,
        })
    }

    pub fn string(&self, field: Field) -> Option<&str> {
        match field {
            Field::Id => self.id.as_deref(),
            Field::Provider => self.provider.as_deref(),
            Field::GpuName => self.gpu_name.as_deref(),
            Field::Geolocation => self.geolocation.as_deref(),
            Field::City => self.city.as_deref(),
            Field::Region => self.region.as_deref(),
            _ => None,
        }
    }

    fn string_mut(&mut self, field: Field) -> Option<&mut Option<String>> {
        Some(match field {
            Field::Id => &mut self.id,
            Field::Provider => &mut self.provider,
            Field::GpuName => &mut self.gpu_name,
            Field::Geolocation => &mut self.geolocation,
            Field::City => &mut self.city,
            Field::Region => &mut self.region,
            _ => return None,
        })
    }

    /// The field's value as a `Value` (`Null` when missing), for rendering and for Python.
    pub fn get(&self, field: Field) -> Value {
        let v = match field.kind() {
            Kind::Number => self.number(field).map(Value::Float),
            Kind::Integer => self.gpu_count.map(Value::Int),
            Kind::String => self.string(field).map(|s| Value::Str(s.to_owned())),
            Kind::Bool => self.verified.map(Value::Bool),
        };
        v.unwrap_or(Value::Null)
    }

    /// Sets one field from a dynamic value, checking its type. `index` names the row in errors.
    pub fn set(&mut self, index: usize, field: Field, value: Value) -> Result<()> {
        let wrong = |v: &Value| {
            PlacementError::offer(
                index,
                format!(
                    "{} must be a {} or null, got {} {v}",
                    field.name(),
                    field.kind().as_str(),
                    v.type_name()
                ),
            )
        };
        if value == Value::Null {
            match field.kind() {
                Kind::Number => *self.number_mut(field).ok_or_else(|| wrong(&value))? = None,
                Kind::Integer => self.gpu_count = None,
                Kind::String => *self.string_mut(field).ok_or_else(|| wrong(&value))? = None,
                Kind::Bool => self.verified = None,
            }
            return Ok(());
        }
        match field.kind() {
            Kind::Number => {
                let x = value.as_number().ok_or_else(|| wrong(&value))?;
                *self.number_mut(field).ok_or_else(|| wrong(&value))? = Some(x);
            }
            Kind::Integer => {
                self.gpu_count = Some(match value {
                    Value::Int(i) => i,
                    Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => x as i64,
                    other => return Err(wrong(&other)),
                });
            }
            Kind::String => {
                let Value::Str(s) = value else {
                    return Err(wrong(&value));
                };
                // Country codes are compared case-insensitively; storing them upper case makes
                // that a plain equality.
                let s = if field == Field::Geolocation {
                    s.trim().to_uppercase()
                } else {
                    s
                };
                *self.string_mut(field).ok_or_else(|| wrong(&Value::Null))? = Some(s);
            }
            Kind::Bool => {
                let Value::Bool(b) = value else {
                    return Err(wrong(&value));
                };
                self.verified = Some(b);
            }
        }
        Ok(())
    }

    /// Builds an offer from a mapping in the normalized schema. Keys outside the schema are
    /// ignored: providers and workers carry extra metadata (raw JSON, labels) beside it.
    pub fn from_value(index: usize, row: &Value) -> Result<Offer> {
        let Value::Map(pairs) = row else {
            return Err(PlacementError::offer(
                index,
                format!("expected a mapping, got {}", row.type_name()),
            ));
        };
        let mut offer = Offer::default();
        for (k, v) in pairs {
            if let Some(field) = Field::from_name(k) {
                offer.set(index, field, v.clone())?;
            }
        }
        Ok(offer)
    }
}
