#[derive(filechannel::Message)]
#[message(name = "String", version = 1)]
struct MyString(Vec<u8>);

#[derive(filechannel::Message)]
struct Box {
    inner: u32,
}

fn main() {}
