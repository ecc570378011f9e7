#[derive(filechannel::Message)]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
