//! The one place where protocol v1's chat values meet the adapter boundary's domain types.
//!
//! Both ends convert here: the chat server turns calls into domain values for the engine and
//! its answers back, the TCP adapter does the opposite. A field added to a domain type does not
//! reach the wire until it is added to `chat` and here on purpose. It must not change values:
//! every conversion is one-to-one. (The enums whose variants carry nothing convert where they
//! are declared, in `chat`, by the macro that declares them.)

use backend_api as domain;
use backend_api::Transcript;

use crate::chat::{
    Action, ChatCreated, ChatDetails, ChatRef, ChatUpdate, Event, Load, NewChat, Participant,
};

/// `From` both ways for structs whose fields convert one by one with `Into` (`list` fields are
/// `Vec`s, `option` fields `Option`s, of convertible values).
macro_rules! fields {
    ($wire:ident { $($field:ident),* $(,)? }
        $(list { $($list:ident),+ })? $(option { $($option:ident),+ })?) => {
        impl From<domain::$wire> for $wire {
            fn from(value: domain::$wire) -> $wire {
                $wire {
                    $($field: value.$field.into(),)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)+)?
                    $($($option: value.$option.map(Into::into),)+)?
                }
            }
        }

        impl From<$wire> for domain::$wire {
            fn from(value: $wire) -> domain::$wire {
                domain::$wire {
                    $($field: value.$field.into(),)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)+)?
                    $($($option: value.$option.map(Into::into),)+)?
                }
            }
        }
    };
}

/// The transcript part of the wire's `transcriptPosition` (0 means none, as in the Web API).
pub fn transcript_from_position(position: u64) -> Transcript {
    match position {
        0 => Transcript::None,
        n => Transcript::From(n),
    }
}

/// The wire's `transcriptPosition` for a transcript request.
pub fn position_of(transcript: Transcript) -> u64 {
    match transcript {
        Transcript::None => 0,
        Transcript::From(n) => n.max(1),
    }
}

fields!(Participant {
    nickname,
    participant_id,
    kind
});
fields!(Event {
    index,
    kind,
    from,
    text,
    message_type,
    utc_time,
    user_data
});
fields!(NewChat {
    tenant_name,
    nickname,
    first_name,
    last_name,
    email_address,
    subject,
    endpoint,
    user_data
});
fields!(ChatRef {
    chat_id,
    user_id,
    secure_key
});
fields!(ChatCreated { chat, next_position } list { messages });
fields!(ChatDetails { state, user_data, read_position } list { participants });
fields!(ChatUpdate {
    next_position,
    chat_ended,
    secure_key
} list { messages } option { details });
fields!(Load {
    active,
    limit,
    accepting
});

impl From<domain::Action> for Action {
    fn from(value: domain::Action) -> Action {
        match value {
            domain::Action::Poll => Action::Poll,
            domain::Action::SendMessage { text, message_type } => {
                Action::SendMessage { text, message_type }
            }
            domain::Action::StartTyping { text } => Action::StartTyping { text },
            domain::Action::StopTyping { text } => Action::StopTyping { text },
            domain::Action::UpdateNickname { nickname } => Action::UpdateNickname { nickname },
            domain::Action::PushUrl { url } => Action::PushUrl { url },
            domain::Action::UpdateUserData { data, text } => Action::UpdateUserData { data, text },
            domain::Action::CustomNotice { text } => Action::CustomNotice { text },
            domain::Action::Complete => Action::Complete,
            domain::Action::ReadReceipt { position } => Action::ReadReceipt {
                read_position: position,
            },
        }
    }
}

impl From<Action> for domain::Action {
    fn from(value: Action) -> domain::Action {
        match value {
            Action::Poll => domain::Action::Poll,
            Action::SendMessage { text, message_type } => {
                domain::Action::SendMessage { text, message_type }
            }
            Action::StartTyping { text } => domain::Action::StartTyping { text },
            Action::StopTyping { text } => domain::Action::StopTyping { text },
            Action::UpdateNickname { nickname } => domain::Action::UpdateNickname { nickname },
            Action::PushUrl { url } => domain::Action::PushUrl { url },
            Action::UpdateUserData { data, text } => domain::Action::UpdateUserData { data, text },
            Action::CustomNotice { text } => domain::Action::CustomNotice { text },
            Action::Complete => domain::Action::Complete,
            Action::ReadReceipt { read_position } => domain::Action::ReadReceipt {
                position: read_position,
            },
        }
    }
}
