//! The store URL: which Redis topology the chat server saves to, parsed once at start.
//!
//! Owns the three URL forms and their checks (`redis://` / `rediss://` one server,
//! `redis+sentinel://` a Sentinel-managed master, `redis+cluster://` a Redis Cluster). It must
//! not connect to anything (the store does) and must never put the URL, which may carry a
//! password, into an error message.

use redis::{ConnectionInfo, IntoConnectionInfo};

/// Where the chats are saved.
#[derive(Debug, PartialEq)]
pub enum Topology {
    /// One Redis server: the URL as given (`redis://` or `rediss://`).
    Single(String),
    /// A master found through Sentinel.
    Sentinel {
        /// The Sentinels, `host:port` each (asked in order until one answers).
        sentinels: Vec<String>,
        /// The master's name in the Sentinels' configuration.
        master: String,
        /// How to log in to the master (user, password, db), from the URL's user info and
        /// optional `/db` after the master name.
        node: Option<String>,
    },
    /// A Redis Cluster: its seed nodes as `redis://[user:password@]host:port` URLs.
    Cluster { nodes: Vec<String> },
}

/// Why a store URL was refused (never containing the URL itself).
pub type Refusal = &'static str;

const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

impl Topology {
    /// Parses a store URL. The error says what is wrong, without repeating the URL.
    pub fn parse(url: &str) -> Result<Topology, Refusal> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Topology::Single(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (userinfo, hosts, path) = split(rest)?;
            let sentinels = hosts_with_port(hosts, SENTINEL_PORT)?;
            let mut parts = path.split('/');
            let master = parts.next().unwrap_or_default();
            if master.is_empty() {
                return Err("a redis+sentinel:// URL names the master after the hosts: redis+sentinel://host:26379,host:26379/mymaster");
            }
            let db = match parts.next() {
                None | Some("") => None,
                Some(db) if db.parse::<u32>().is_ok() => Some(db),
                Some(_) => return Err("the database after the master name must be a number"),
            };
            if parts.next().is_some() {
                return Err("a redis+sentinel:// URL has at most /master/db after the hosts");
            }
            let node = (userinfo.is_some() || db.is_some()).then(|| {
                let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                // The host is a placeholder: only the login part is used.
                format!("redis://{auth}localhost/{}", db.unwrap_or("0"))
            });
            if let Some(node) = &node {
                parse_node(node)?;
            }
            return Ok(Topology::Sentinel {
                sentinels,
                master: master.to_owned(),
                node,
            });
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (userinfo, hosts, path) = split(rest)?;
            if !path.is_empty() {
                return Err("a redis+cluster:// URL has no path (a cluster has one database)");
            }
            let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            let nodes: Vec<String> = hosts_with_port(hosts, REDIS_PORT)?
                .into_iter()
                .map(|host| format!("redis://{auth}{host}"))
                .collect();
            for node in &nodes {
                parse_node(node)?;
            }
            return Ok(Topology::Cluster { nodes });
        }
        Err("must be a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL")
    }

    /// The login the Sentinel topology uses on the master it finds.
    pub fn node_info(node: &str) -> Result<ConnectionInfo, Refusal> {
        parse_node(node)
    }
}

fn parse_node(node: &str) -> Result<ConnectionInfo, Refusal> {
    node.into_connection_info()
        .map_err(|_| "the user, password or host in the store URL is not valid")
}

/// `[userinfo@]hosts[/path]` → (userinfo, hosts, path).
fn split(rest: &str) -> Result<(Option<&str>, &str, &str), Refusal> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err("the store URL names no host");
    }
    Ok((userinfo, hosts, path))
}

/// `h1:p1,h2,[::1]:p3` → `["h1:p1", "h2:<default>", "[::1]:p3"]`.
fn hosts_with_port(hosts: &str, default_port: u16) -> Result<Vec<String>, Refusal> {
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err("the store URL has an empty host in its list");
            }
            // `[::1]` alone has colons but no port.
            let has_port = match host.rsplit_once(':') {
                Some((before, port)) if !before.starts_with('[') || before.ends_with(']') => {
                    port.parse::<u16>()
                        .map_err(|_| "a port in the store URL is not a number")?;
                    true
                }
                _ => false,
            };
            Ok(if has_port {
                host.to_owned()
            } else {
                format!("{host}:{default_port}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_urls_are_kept_as_given() {
        assert_eq!(
            Topology::parse("redis://h:1/2"),
            Ok(Topology::Single("redis://h:1/2".into()))
        );
        assert!(matches!(
            Topology::parse("rediss://h"),
            Ok(Topology::Single(_))
        ));
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        assert_eq!(
            Topology::parse("redis+sentinel://a:26380,b/mymaster"),
            Ok(Topology::Sentinel {
                sentinels: vec!["a:26380".into(), "b:26379".into()],
                master: "mymaster".into(),
                node: None,
            })
        );
        let Ok(Topology::Sentinel {
            node: Some(node), ..
        }) = Topology::parse("redis+sentinel://:pw@a:1,b:2/m/3")
        else {
            panic!("a sentinel topology with a login");
        };
        let info = Topology::node_info(&node).unwrap();
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
        assert_eq!(info.redis.db, 3);
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel://a:x/m",
            "redis+sentinel:///m",
            "redis+sentinel://a,,b/m",
            "redis+sentinel://a/m/db",
            "redis+sentinel://a/m/1/2",
        ] {
            assert!(Topology::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_urls_list_the_seed_nodes_with_the_login() {
        assert_eq!(
            Topology::parse("redis+cluster://u:p@h1:7000,h2,[::1]:7002"),
            Ok(Topology::Cluster {
                nodes: vec![
                    "redis://u:p@h1:7000".into(),
                    "redis://u:p@h2:6379".into(),
                    "redis://u:p@[::1]:7002".into(),
                ]
            })
        );
        assert!(Topology::parse("redis+cluster://h1:7000/0").is_err());
        assert!(Topology::parse("http://h").is_err());
    }

    #[test]
    fn refusals_never_repeat_the_url() {
        let secret = "s3cr3t-password";
        for url in [
            format!("redis+sentinel://:{secret}@a:x/m"),
            format!("redis+cluster://:{secret}@a:x"),
            format!("memcached://:{secret}@a"),
        ] {
            let refusal = Topology::parse(&url).unwrap_err();
            assert!(!refusal.contains(secret));
        }
    }
}
