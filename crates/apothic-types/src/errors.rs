/// A stable, dotted error code. Adding a variant is fine; renaming one breaks clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    InvalidArgument,
    QueueEmpty,
    QueueLeaseLost,
    Shutdown,
    Internal,
    DictCasConflict,
    DictLeaseNotFound,
    DictFenceStale,
    DictCompacted,
    LockNotHeld,
    ElectionNotLeader,
    ProviderUnavailable,
    ProviderRejected,
    SandboxNotFound,
    SandboxTerminated,
    SandboxTimeout,
    SandboxExecTimeout,
    SandboxPathEscape,
    SandboxFileNotFound,
    SandboxFilesystemError,
    SandboxFileTooLarge,
    SandboxSessionNotFound,
    SandboxProcessNotFound,
    SandboxNameTaken,
    SandboxNoWorker,
    SessionProtocol,
    SessionClosed,
    SessionDead,
    SessionStreamNotFound,
    SessionStreamClosed,
    SessionStreamReset,
    SessionBufferFull,
    SessionStreamLimit,
    PlacementInvalidFilter,
    PlacementNoMatch,
    ClsInstanceConflict,
    ClsInstanceStopped,
    ClsInvalidParams,
    ClsNotFound,
    ClsMethodNotFound,
    WebNotFound,
    WebUpstreamFailed,
    WebTimeout,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 44] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::QueueEmpty,
        ErrorCode::QueueLeaseLost,
        ErrorCode::Shutdown,
        ErrorCode::Internal,
        ErrorCode::DictCasConflict,
        ErrorCode::DictLeaseNotFound,
        ErrorCode::DictFenceStale,
        ErrorCode::DictCompacted,
        ErrorCode::LockNotHeld,
        ErrorCode::ElectionNotLeader,
        ErrorCode::ProviderUnavailable,
        ErrorCode::ProviderRejected,
        ErrorCode::SandboxNotFound,
        ErrorCode::SandboxTerminated,
        ErrorCode::SandboxTimeout,
        ErrorCode::SandboxExecTimeout,
        ErrorCode::SandboxPathEscape,
        ErrorCode::SandboxFileNotFound,
        ErrorCode::SandboxFilesystemError,
        ErrorCode::SandboxFileTooLarge,
        ErrorCode::SandboxSessionNotFound,
        ErrorCode::SandboxProcessNotFound,
        ErrorCode::SandboxNameTaken,
        ErrorCode::SandboxNoWorker,
        ErrorCode::SessionProtocol,
        ErrorCode::SessionClosed,
        ErrorCode::SessionDead,
        ErrorCode::SessionStreamNotFound,
        ErrorCode::SessionStreamClosed,
        ErrorCode::SessionStreamReset,
        ErrorCode::SessionBufferFull,
        ErrorCode::SessionStreamLimit,
        ErrorCode::PlacementInvalidFilter,
        ErrorCode::PlacementNoMatch,
        ErrorCode::ClsInstanceConflict,
        ErrorCode::ClsInstanceStopped,
        ErrorCode::ClsInvalidParams,
        ErrorCode::ClsNotFound,
        ErrorCode::ClsMethodNotFound,
        ErrorCode::WebNotFound,
        ErrorCode::WebUpstreamFailed,
        ErrorCode::WebTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::QueueEmpty => "queue.empty",
            ErrorCode::QueueLeaseLost => "queue.lease_lost",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::Internal => "internal",
            ErrorCode::DictCasConflict => "dict.cas_conflict",
            ErrorCode::DictLeaseNotFound => "dict.lease_not_found",
            ErrorCode::DictFenceStale => "dict.fence_stale",
            ErrorCode::DictCompacted => "dict.compacted",
            ErrorCode::LockNotHeld => "lock.not_held",
            ErrorCode::ElectionNotLeader => "election.not_leader",
            ErrorCode::ProviderUnavailable => "provider.unavailable",
            ErrorCode::ProviderRejected => "provider.rejected",
            ErrorCode::SandboxNotFound => "sandbox.not_found",
            ErrorCode::SandboxTerminated => "sandbox.terminated",
            ErrorCode::SandboxTimeout => "sandbox.timeout",
            ErrorCode::SandboxExecTimeout => "sandbox.exec_timeout",
            ErrorCode::SandboxPathEscape => "sandbox.path_escape",
            ErrorCode::SandboxFileNotFound => "sandbox.file_not_found",
            ErrorCode::SandboxFilesystemError => "sandbox.filesystem_error",
            ErrorCode::SandboxFileTooLarge => "sandbox.file_too_large",
            ErrorCode::SandboxSessionNotFound => "sandbox.session_not_found",
            ErrorCode::SandboxProcessNotFound => "sandbox.process_not_found",
            ErrorCode::SandboxNameTaken => "sandbox.name_taken",
            ErrorCode::SandboxNoWorker => "sandbox.no_worker",
            ErrorCode::SessionProtocol => "session.protocol",
            ErrorCode::SessionClosed => "session.closed",
            ErrorCode::SessionDead => "session.dead",
            ErrorCode::SessionStreamNotFound => "session.stream_not_found",
            ErrorCode::SessionStreamClosed => "session.stream_closed",
            ErrorCode::SessionStreamReset => "session.stream_reset",
            ErrorCode::SessionBufferFull => "session.buffer_full",
            ErrorCode::SessionStreamLimit => "session.stream_limit",
            ErrorCode::PlacementInvalidFilter => "placement.invalid_filter",
            ErrorCode::PlacementNoMatch => "placement.no_match",
            ErrorCode::ClsInstanceConflict => "cls.instance_conflict",
            ErrorCode::ClsInstanceStopped => "cls.instance_stopped",
            ErrorCode::ClsInvalidParams => "cls.invalid_params",
            ErrorCode::ClsNotFound => "cls.not_found",
            ErrorCode::ClsMethodNotFound => "cls.method_not_found",
            ErrorCode::WebNotFound => "web.not_found",
            ErrorCode::WebUpstreamFailed => "web.upstream_failed",
            ErrorCode::WebTimeout => "web.timeout",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_dotted_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'),
                "{s}"
            );
        }
    }
}
