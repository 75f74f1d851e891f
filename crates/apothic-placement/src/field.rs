//! The normalized offer schema, shared with the providers and the scheduler. Names are part of
//! the filter language users write, so they never change.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Number,
    Integer,
    String,
    Bool,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::String => "string",
            Kind::Bool => "bool",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Id,
    Provider,
    GpuName,
    GpuCount,
    VramGb,
    Cpu,
    MemoryGb,
    DiskGb,
    PricePerHourUsd,
    Reliability,
    InetDown,
    InetUp,
    Geolocation,
    City,
    Region,
    Cuda,
    Verified,
}

/// Number columns, in the order of `Field::slot` for `Kind::Number`.
pub(crate) const NUMBER_FIELDS: [Field; 9] = [
    Field::VramGb,
    Field::Cpu,
    Field::MemoryGb,
    Field::DiskGb,
    Field::PricePerHourUsd,
    Field::Reliability,
    Field::InetDown,
    Field::InetUp,
    Field::Cuda,
];
pub(crate) const STRING_FIELDS: [Field; 6] = [
    Field::Id,
    Field::Provider,
    Field::GpuName,
    Field::Geolocation,
    Field::City,
    Field::Region,
];

impl Field {
    pub const ALL: [Field; 17] = [
        Field::Id,
        Field::Provider,
        Field::GpuName,
        Field::GpuCount,
        Field::VramGb,
        Field::Cpu,
        Field::MemoryGb,
        Field::DiskGb,
        Field::PricePerHourUsd,
        Field::Reliability,
        Field::InetDown,
        Field::InetUp,
        Field::Geolocation,
        Field::City,
        Field::Region,
        Field::Cuda,
        Field::Verified,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Provider => "provider",
            Field::GpuName => "gpu_name",
            Field::GpuCount => "gpu_count",
            Field::VramGb => "vram_gb",
            Field::Cpu => "cpu",
            Field::MemoryGb => "memory_gb",
            Field::DiskGb => "disk_gb",
            Field::PricePerHourUsd => "price_per_hour_usd",
            Field::Reliability => "reliability",
            Field::InetDown => "inet_down",
            Field::InetUp => "inet_up",
            Field::Geolocation => "geolocation",
            Field::City => "city",
            Field::Region => "region",
            Field::Cuda => "cuda",
            Field::Verified => "verified",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Field::GpuCount => Kind::Integer,
            Field::Verified => Kind::Bool,
            f if STRING_FIELDS.contains(&f) => Kind::String,
            _ => Kind::Number,
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Index of this field's column among the columns of its kind.
    pub(crate) fn slot(self) -> usize {
        let pos = match self.kind() {
            Kind::Number => NUMBER_FIELDS.iter().position(|f| *f == self),
            Kind::String => STRING_FIELDS.iter().position(|f| *f == self),
            Kind::Integer | Kind::Bool => Some(0),
        };
        pos.unwrap_or(0)
    }
}

pub fn known_fields() -> String {
    Field::ALL.map(Field::name).join(", ")
}
